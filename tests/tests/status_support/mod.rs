//! Shared by the status end-to-end tests: a server whose schedule is shortened (tight
//! 500 ms, ceiling 4 s, 1 s fetch timeout) so the rules play out in seconds.

use std::time::Duration;

use slipway_tests::server::TestServer;

pub async fn fast_server() -> TestServer {
    TestServer::start_with(
        |c| {
            c.status.schedule.tight = Duration::from_millis(500);
            c.status.schedule.ceiling = Duration::from_secs(4);
            c.status.fetch.timeout = Duration::from_secs(1);
        },
        slipway_server::router::app,
    )
    .await
}
