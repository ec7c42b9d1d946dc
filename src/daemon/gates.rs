//! Gate webhooks: for each due rollout waiting at a webhook gate, one POST per interval,
//! all at once, each bounded by its gate's timeout. A 2xx answer opens the gate; the
//! answer reaches the engine as the interval's gate observation, and is recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;

use crate::engine::plan::Gate;
use crate::engine::{GateAnswer, Rollout, RolloutId};

/// One gate webhook to ask.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    /// The rollout.
    pub rollout: RolloutId,
    /// Where to POST.
    pub url: String,
    /// Longest wait for the answer.
    pub timeout: Duration,
    /// What is POSTed.
    pub body: AskBody,
}

/// The JSON a gate webhook receives: which rollout waits, at which step.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AskBody {
    /// `namespace/name`.
    pub rollout: String,
    /// Namespace (or the local platform's group).
    pub namespace: String,
    /// Workload name.
    pub name: String,
    /// The canary's revision.
    pub revision: String,
    /// The step it waits at, from 1.
    pub step: usize,
    /// The canary weight it holds.
    pub weight: u8,
    /// The policy running it.
    pub policy: String,
}

/// The webhook to ask for `r`, if it waits at a webhook gate.
pub fn ask(id: &RolloutId, r: &Rollout) -> Option<Ask> {
    let Some(Gate::Webhook { url, timeout }) = r.gate() else { return None };
    Some(Ask {
        rollout: id.clone(),
        url: url.clone(),
        timeout: *timeout,
        body: AskBody {
            rollout: id.to_string(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            revision: r.revision.clone(),
            step: r.step + 1,
            weight: r.weight,
            policy: r.plan.policy.clone(),
        },
    })
}

/// Asks every webhook concurrently: open on a 2xx within the timeout, closed otherwise.
pub async fn run(client: &reqwest::Client, asks: Vec<Ask>) -> BTreeMap<RolloutId, GateAnswer> {
    let answers = join_all(asks.into_iter().map(|a| async move {
        let sent = tokio::time::timeout(a.timeout, client.post(&a.url).json(&a.body).send()).await;
        let answer = match sent {
            Ok(Ok(response)) => {
                let status = response.status();
                GateAnswer { open: status.is_success(), detail: format!("answered {status}") }
            }
            Ok(Err(e)) => GateAnswer { open: false, detail: crate::notify::failure(&e).to_string() },
            Err(_) => GateAnswer {
                open: false,
                detail: format!("did not answer within {}", humantime::format_duration(a.timeout)),
            },
        };
        tracing::debug!(rollout = %a.rollout, open = answer.open, answer = %answer.detail, "gate webhook asked");
        (a.rollout, answer)
    }))
    .await;
    answers.into_iter().collect()
}
