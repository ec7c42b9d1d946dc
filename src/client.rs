//! A client of the daemon's API: what `canaryd rollout …` uses.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::daemon::view::RolloutView;
use crate::server::api::{CommandAnswer, RolloutDetail, StartAnswer, StartRequest};

/// A failed call: the daemon's status and message, or why it could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error.
    #[error("{status}: {message}")]
    Refused {
        /// Its HTTP status.
        status: reqwest::StatusCode,
        /// Its `error` message.
        message: String,
    },
    /// The daemon could not be reached, or answered something unreadable.
    #[error("{0}")]
    Unreachable(String),
}

/// The daemon at `base`, with a bearer token for the calls that need one.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the daemon at `base` (e.g. `http://127.0.0.1:8480`).
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(Client { http, base: base.trim_end_matches('/').to_string(), token })
    }

    async fn call<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            ClientError::Unreachable(format!("cannot reach the daemon at {}: {e}", self.base))
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| "no reason given".into());
            return Err(ClientError::Refused { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Unreachable(format!("the daemon's answer is not what was expected: {e}"))
        })
    }

    /// Every rollout.
    pub async fn list(&self) -> Result<Vec<RolloutView>, ClientError> {
        self.call(self.http.get(format!("{}/api/v1/rollouts", self.base))).await
    }

    /// `namespace/name` of `rollout`, given as `namespace/name` or as a name that one
    /// rollout has.
    pub async fn resolve(&self, rollout: &str) -> Result<(String, String), ClientError> {
        if let Some((namespace, name)) = rollout.split_once('/') {
            return Ok((namespace.to_string(), name.to_string()));
        }
        let all = self.list().await?;
        let named: Vec<&RolloutView> = all.iter().filter(|v| v.name == rollout).collect();
        match named.as_slice() {
            [one] => Ok((one.namespace.clone(), one.name.clone())),
            [] => Err(ClientError::Refused {
                status: reqwest::StatusCode::NOT_FOUND,
                message: format!("no rollout named {rollout}"),
            }),
            many => Err(ClientError::Refused {
                status: reqwest::StatusCode::BAD_REQUEST,
                message: format!(
                    "{rollout} names {} rollouts ({}); give namespace/name",
                    many.len(),
                    many.iter().map(|v| v.id()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }

    /// One rollout in detail.
    pub async fn detail(&self, namespace: &str, name: &str) -> Result<RolloutDetail, ClientError> {
        self.call(self.http.get(format!("{}/api/v1/rollouts/{namespace}/{name}", self.base))).await
    }

    /// Starts a rollout of a declared service (local platform).
    pub async fn start(&self, service: &str, revision: &str) -> Result<StartAnswer, ClientError> {
        let body = StartRequest { service: service.into(), revision: revision.into() };
        self.call(self.http.post(format!("{}/api/v1/rollouts", self.base)).json(&body)).await
    }

    /// Sends an operator command (`promote`, `abort`, `pause`, `resume`).
    pub async fn command(
        &self,
        namespace: &str,
        name: &str,
        verb: &str,
    ) -> Result<CommandAnswer, ClientError> {
        self.call(self.http.post(format!("{}/api/v1/rollouts/{namespace}/{name}/{verb}", self.base))).await
    }
}
