//! Alertmanager's API v2 as an input: the alerts firing now. Alertmanager's webhook
//! (`POST /api/v1/alertmanager`) tells canaryd of an alert when it starts firing and
//! then only every `repeat_interval` (hours by default), so a rollout that starts, or a
//! daemon that resumes, while an alert is already firing would not hear of it for hours.
//! The daemon reads the firing alerts here at those moments instead.
//!
//! It lives with the metric sources: like Prometheus, Alertmanager is evidence read
//! about the canary, not a place notifications go.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

/// Labels that can name the workload of an alert.
pub const WORKLOAD_LABELS: [&str; 4] = ["rollout", "workload", "deployment", "service"];

/// Longest annotation kept as an alert's detail.
const DETAIL_CHARS: usize = 500;

/// Where Alertmanager is.
#[derive(Clone, Debug)]
pub struct AlertmanagerSettings {
    /// Base URL (the API is under `api/v2/`).
    pub url: url::Url,
    /// Longest a read of the firing alerts may take.
    pub timeout: Duration,
}

/// One alert as Alertmanager's API v2 lists it; fields canaryd does not use are ignored.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ActiveAlert {
    /// Its labels: `alertname`, and the workload's (`namespace`, and `rollout`,
    /// `workload`, `deployment` or `service`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations (`summary`, `description`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ActiveAlert {
    /// Its `alertname`.
    pub fn name(&self) -> Option<&str> {
        self.labels.get("alertname").map(String::as_str)
    }

    /// Its `namespace` label.
    pub fn namespace(&self) -> Option<&str> {
        self.labels.get("namespace").map(String::as_str)
    }

    /// The workloads it names, from [`WORKLOAD_LABELS`].
    pub fn workloads(&self) -> Vec<String> {
        WORKLOAD_LABELS.iter().filter_map(|l| self.labels.get(*l)).cloned().collect()
    }

    /// Its summary, else its description (cut to 500 characters).
    pub fn detail(&self) -> String {
        let text = self.annotations.get("summary").or_else(|| self.annotations.get("description"));
        text.map(|t| t.chars().take(DETAIL_CHARS).collect()).unwrap_or_default()
    }
}

/// Why the firing alerts could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertmanagerError {
    /// Alertmanager could not be reached.
    #[error("Alertmanager unreachable: {0}")]
    Unreachable(String),
    /// No answer within the timeout.
    #[error("Alertmanager did not answer within {0:?}")]
    Timeout(Duration),
    /// An answer other than 200.
    #[error("Alertmanager answered HTTP {0}")]
    Status(u16),
    /// A body that is not API v2's list of alerts.
    #[error("Alertmanager's answer is not a list of alerts: {0}")]
    Malformed(String),
    /// The client could not be built.
    #[error("cannot build the Alertmanager client: {0}")]
    Client(String),
}

impl AlertmanagerError {
    /// The `outcome` label it is counted under.
    pub fn label(&self) -> &'static str {
        match self {
            AlertmanagerError::Unreachable(_) | AlertmanagerError::Client(_) => "unreachable",
            AlertmanagerError::Timeout(_) => "timeout",
            AlertmanagerError::Status(_) => "server-error",
            AlertmanagerError::Malformed(_) => "malformed",
        }
    }
}

/// Labels of `canaryd_alertmanager_queries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertQueryLabels {
    /// `ok`, `unreachable`, `timeout`, `server-error` or `malformed`.
    pub outcome: &'static str,
}

/// The reader's own metrics.
#[derive(Clone, Debug)]
pub struct AlertmanagerMetrics {
    /// `canaryd_alertmanager_queries_total{outcome}`: reads of the firing alerts.
    pub queries: Family<AlertQueryLabels, Counter>,
}

impl AlertmanagerMetrics {
    /// The reader's metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> AlertmanagerMetrics {
        let m = AlertmanagerMetrics { queries: Family::default() };
        registry.register(
            "alertmanager_queries",
            "Reads of Alertmanager's firing alerts by outcome",
            m.queries.clone(),
        );
        m
    }
}

impl Default for AlertmanagerMetrics {
    /// Metrics registered nowhere: for tests.
    fn default() -> Self {
        AlertmanagerMetrics::register(&mut Registry::default())
    }
}

/// Reads the firing alerts from Alertmanager's API v2.
#[derive(Clone, Debug)]
pub struct AlertmanagerSource {
    client: reqwest::Client,
    alerts_url: String,
    timeout: Duration,
    metrics: AlertmanagerMetrics,
}

impl AlertmanagerSource {
    /// A reader of the Alertmanager at `settings.url`.
    pub fn new(
        settings: &AlertmanagerSettings,
        metrics: AlertmanagerMetrics,
    ) -> Result<AlertmanagerSource, AlertmanagerError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| AlertmanagerError::Client(e.to_string()))?;
        let alerts_url = format!("{}/api/v2/alerts", settings.url.as_str().trim_end_matches('/'));
        Ok(AlertmanagerSource { client, alerts_url, timeout: settings.timeout, metrics })
    }

    /// The alerts firing now: active, neither silenced nor inhibited. Each read is
    /// counted by outcome.
    pub async fn firing(&self) -> Result<Vec<ActiveAlert>, AlertmanagerError> {
        let result = self.read().await;
        let outcome = result.as_ref().map_or_else(AlertmanagerError::label, |_| "ok");
        self.metrics.queries.get_or_create(&AlertQueryLabels { outcome }).inc();
        result
    }

    async fn read(&self) -> Result<Vec<ActiveAlert>, AlertmanagerError> {
        let query = [("active", "true"), ("silenced", "false"), ("inhibited", "false")];
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                AlertmanagerError::Timeout(self.timeout)
            } else {
                AlertmanagerError::Unreachable(crate::secret::without_userinfo(&e.to_string()))
            }
        };
        let response = self.client.get(&self.alerts_url).query(&query).send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(AlertmanagerError::Status(response.status().as_u16()));
        }
        let body = response.bytes().await.map_err(failed)?;
        serde_json::from_slice(&body).map_err(|e| AlertmanagerError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_v2_alert_names_its_workloads_namespace_and_detail() {
        // One entry of `GET /api/v2/alerts` as Alertmanager's OpenAPI spec gives it.
        let body = r#"[{
            "annotations": {"summary": "5xx above 5% on web", "description": "longer"},
            "endsAt": "2025-01-01T01:00:00Z", "fingerprint": "6b1c3ff1f5b7b0a6",
            "receivers": [{"name": "team"}], "startsAt": "2025-01-01T00:00:00Z",
            "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
            "updatedAt": "2025-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
            "labels": {"alertname": "WebCanaryErrors", "namespace": "shop", "deployment": "web", "service": "web-svc"}
        }]"#;
        let alerts: Vec<ActiveAlert> = serde_json::from_str(body).unwrap();
        let a = &alerts[0];
        assert_eq!(a.name(), Some("WebCanaryErrors"));
        assert_eq!(a.namespace(), Some("shop"));
        assert_eq!(a.workloads(), ["web", "web-svc"]);
        assert_eq!(a.detail(), "5xx above 5% on web");
    }
}
