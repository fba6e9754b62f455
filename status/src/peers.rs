//! What the replicas of a sharded fleet tell each other, so every replica holds the whole
//! fleet and answers for every shard: the transitions each judged for the instances it
//! checks, the bulk changes each applied, and deploy events for instances another replica
//! checks. Carried by PostgreSQL's `NOTIFY` on [`CHANNEL`]; the server listens and hands
//! each payload to [`crate::StatusService::receive`].
//!
//! Notifications can be lost while a replica is not listening: bulk changes are also kept
//! in the `status_changes` feed, and a replica that listens again replays the feed and
//! reloads the others' statuses ([`crate::StatusService::resync`]).

use serde::{Deserialize, Serialize};
use sqlx::AnyPool;

use crate::events::Transition;
use crate::health::Health;

pub const CHANNEL: &str = "slipway_status";
/// PostgreSQL refuses payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_800;
/// Reasons are cut to this many bytes in a notification (the history keeps them whole).
const MAX_REASON: usize = 512;

/// A status another replica judged: instance id, new status, reason, when (wall ms).
pub type Judged = (String, Health, String, i64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Message {
    Transitions(Vec<Judged>),
    /// A bulk change, by its id in the `status_changes` feed.
    Changed(String),
    /// A deploy event for an app instance or instance: its owner checks it now.
    DeployEvent(String),
}

/// A message with the replica that sent it (listeners hear their own, too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    pub message: Message,
}

impl Envelope {
    pub fn parse(payload: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload)
    }

    pub fn payload(&self) -> String {
        serde_json::to_string(self).expect("serialisable")
    }
}

/// The transitions as payloads that each fit in one notification.
pub fn transition_payloads(from: &str, transitions: &[Transition]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut batch: Vec<Judged> = Vec::new();
    let mut size = 0;
    for t in transitions {
        let reason = cut(&t.reason, MAX_REASON);
        // JSON escaping can at most double the text; ids are bounded by validation.
        let item = 2 * (t.instance_id.len() + reason.len()) + 48;
        if size + item > MAX_PAYLOAD - from.len() - 64 && !batch.is_empty() {
            let message = Message::Transitions(std::mem::take(&mut batch));
            payloads.push(Envelope { from: from.to_owned(), message }.payload());
            size = 0;
        }
        batch.push((t.instance_id.to_string(), t.to, reason.to_owned(), t.at_ms));
        size += item;
    }
    if !batch.is_empty() {
        payloads.push(Envelope { from: from.to_owned(), message: Message::Transitions(batch) }.payload());
    }
    payloads
}

/// Sends payloads to every replica listening (this one included; it ignores its own).
pub async fn announce(db: &AnyPool, payloads: &[String]) {
    for p in payloads {
        let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(p).execute(db).await;
        if let Err(e) = sent {
            // The others catch up when they next resynchronise.
            tracing::warn!(error = %e, "could not tell the other replicas about a status change");
            return;
        }
    }
}

/// The longest prefix of `s` within `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(id: &str, reason: &str) -> Transition {
        Transition {
            instance_id: id.into(),
            app_instance: "a".into(),
            component: "web".into(),
            from: Health::Healthy,
            to: Health::Degraded,
            reason: reason.into(),
            at_ms: 7,
        }
    }

    #[test]
    fn transitions_are_split_into_payloads_postgres_accepts() {
        let long = "é\"".repeat(2_000);
        let many: Vec<Transition> = (0..500).map(|n| transition(&format!("shop-{n}/web"), &long)).collect();
        let payloads = transition_payloads("replica-a", &many);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8_000, "{} bytes", p.len());
            let envelope = Envelope::parse(p).unwrap();
            assert_eq!(envelope.from, "replica-a");
            let Message::Transitions(items) = envelope.message else { panic!("transitions") };
            back.extend(items);
        }
        assert_eq!(back.len(), 500);
        assert_eq!(back[499].0, "shop-499/web");
        assert!(back[0].2.len() <= MAX_REASON && long.starts_with(&back[0].2));
    }
}
