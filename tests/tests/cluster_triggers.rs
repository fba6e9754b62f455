//! A trigger's rate limit holds for the whole deployment, not per replica: two real
//! `slipway serve` replicas on one database (SQLite here, PostgreSQL on the second pass)
//! flooded with deliveries, evenly or not, accept at most the configured rate between them,
//! a replica that gets all the traffic gets (nearly) all of the rate, and every delivery
//! refused is `429 rate_limited` with a `Retry-After`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use slipway_tests::process::{Slipway, slipway_binary};

const RATE: u64 = 20;
/// What one replica may leave unspent while the other is refused (a share is at most a
/// tenth of the rate) and the refill lost while leases travel: with two replicas at least
/// 80 % of each fully flooded second is accepted.
const MIN_SPENT_PCT: u64 = 80;
/// The bucket's burst: a tenth of the rate.
const BURST: u64 = RATE / 10;

async fn replica(binary: &Path, data: &Path, database: &str, config: &Path) -> Slipway {
    let env = [("SLIPWAY_DATABASE__URL", database)];
    Slipway::start(binary, data, &["--config", config.to_str().unwrap()], &env).await
}

/// Accepted deliveries and the database windows (whole seconds) the flood touched.
struct Flooded {
    accepted: u64,
    /// Windows the flood began and ended in; all of its leases fell into these.
    first_window: u64,
    last_window: u64,
}

impl Flooded {
    fn windows(&self) -> u64 {
        self.last_window - self.first_window + 1
    }

    /// Windows flooded from start to end (not the first or the last).
    fn full_windows(&self) -> u64 {
        self.windows().saturating_sub(2)
    }
}

fn unix_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `clients` clients per replica send unique deliveries back to back for `span`.
async fn flood(targets: &[(&Slipway, usize)], trigger: &str, secret: &str, span: Duration) -> Flooded {
    static COMMIT: AtomicU64 = AtomicU64::new(0);
    let accepted = Arc::new(AtomicU64::new(0));
    let first_window = unix_s();
    let deadline = tokio::time::Instant::now() + span;
    let mut clients = Vec::new();
    for (replica, count) in targets {
        for _ in 0..*count {
            let url = replica.url(&format!("/v1/triggers/{trigger}"));
            let (secret, accepted) = (secret.to_owned(), accepted.clone());
            clients.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                while tokio::time::Instant::now() < deadline {
                    let commit = format!("{:040x}", COMMIT.fetch_add(1, Ordering::Relaxed));
                    let push = json!({"action": "build", "repository": "acme/shop",
                                      "ref": "refs/heads/main", "commit": commit});
                    let response = http.post(&url).bearer_auth(&secret).json(&push).send().await.unwrap();
                    match response.status().as_u16() {
                        202 => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {
                            let retry_after = response.headers().get("retry-after").cloned();
                            let body: Value = response.json().await.unwrap();
                            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                            let retry_after: u64 =
                                retry_after.expect("Retry-After").to_str().unwrap().parse().unwrap();
                            assert!((1..=2).contains(&retry_after), "{retry_after}");
                        }
                        other => panic!("delivery answered {other}: {}", response.text().await.unwrap()),
                    }
                }
            }));
        }
    }
    for client in clients {
        client.await.unwrap();
    }
    Flooded { accepted: accepted.load(Ordering::Relaxed), first_window, last_window: unix_s() }
}

#[tokio::test]
async fn a_trigger_rate_limit_holds_across_replicas_however_the_deliveries_are_spread() {
    let binary = slipway_binary();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [shared, data_a, data_b] = &dirs;
    let database = slipway_tests::database::shared_url(shared.path()).await;
    let config = shared.path().join("slipway.toml");
    let settings = format!("[pipeline]\nrun_builds = false\n[triggers]\nper_trigger_per_s = {RATE}\n");
    std::fs::write(&config, settings).unwrap();
    let a = replica(&binary, data_a.path(), &database, &config).await;
    // The second replica shares the database, so the first one's admin token works on it.
    std::fs::copy(data_a.path().join("admin-token"), data_b.path().join("admin-token")).unwrap();
    let b = replica(&binary, data_b.path(), &database, &config).await;

    let trigger = a
        .post_json(
            "/v1/triggers",
            &json!({"app": "limited", "adapter": "generic",
                    "repository_url": "https://git.example/acme/shop.git",
                    "components": [{"name": "app", "type": "microservice"}]}),
        )
        .await;
    let (id, secret) = (trigger["trigger"]["id"].as_str().unwrap(), trigger["secret"].as_str().unwrap());

    // Three of four deliveries to A: together the two accept the rate, not twice it.
    let uneven = flood(&[(&a, 6), (&b, 2)], id, secret, Duration::from_secs(4)).await;
    eprintln!("uneven: {} accepted in {} windows", uneven.accepted, uneven.windows());
    assert!(uneven.accepted <= RATE * uneven.windows(), "more than the rate over both replicas");
    // Any span passes at most its rate plus one burst; a share left from before the flood
    // (none here) and one leased as it ends add a burst per replica at most.
    let most = RATE * 4 + 3 * BURST;
    assert!(uneven.accepted <= most, "{} accepted in 4 s, at most {most}", uneven.accepted);
    let at_least = RATE * uneven.full_windows() * MIN_SPENT_PCT / 100;
    assert!(uneven.accepted >= at_least, "{} accepted, expected at least {at_least}", uneven.accepted);

    // Everything to B: B gets the whole rate, not the half a per-replica split would give.
    let one_sided = flood(&[(&b, 8)], id, secret, Duration::from_secs(3)).await;
    eprintln!("one-sided: {} accepted in {} windows", one_sided.accepted, one_sided.windows());
    assert!(one_sided.accepted <= RATE * one_sided.windows());
    // A's share from the uneven flood may still be spent at the start: one burst more.
    let most = RATE * 3 + 4 * BURST;
    assert!(one_sided.accepted <= most, "{} accepted in 3 s, at most {most}", one_sided.accepted);
    let at_least = RATE * one_sided.full_windows() * MIN_SPENT_PCT / 100;
    assert!(one_sided.accepted >= at_least, "{} accepted, expected at least {at_least}", one_sided.accepted);

    let builds = b.get_json("/v1/builds?app=limited&limit=500").await;
    let stored = builds["builds"].as_array().unwrap().len() as u64;
    assert_eq!(stored, uneven.accepted + one_sided.accepted, "each accepted delivery stored one build");
}
