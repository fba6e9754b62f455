//! Incomplete multipart uploads on a real Garage node: what a process killed mid-upload
//! leaves in the bucket, and the garbage collector aborting it.

use std::time::Duration;

use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};

use crate::storage::garage;
use crate::support::Api;

/// Multipart upload ids are the collector's to abort: while this test holds the lock, no
/// other test process of this suite has an upload in flight in the shared bucket.
pub fn exclusive_uploads() -> std::fs::File {
    let file = std::fs::File::create(std::env::temp_dir().join("slipway-test-garage-uploads.lock")).unwrap();
    file.lock().unwrap();
    file
}

#[tokio::test]
async fn the_collector_aborts_multipart_uploads_left_open_past_the_grace_period() {
    let Some(configure) = garage() else {
        eprintln!(
            "skipped: SLIPWAY_TEST_S3_ENDPOINT/ACCESS_KEY_ID/SECRET_ACCESS_KEY not set (tests/garage.sh starts a node)"
        );
        return;
    };
    let _lock = exclusive_uploads();
    let api = Api::start_with(configure).await;
    let state = &api.server.state;
    let key = Path::from(format!("uploads/left-open-{}", std::process::id()));
    let mut upload = state.objects.put_multipart(&key).await.unwrap();
    upload.put_part(PutPayload::from(vec![7u8; 1 << 20])).await.unwrap();
    // Neither completed nor aborted: what a killed process leaves.

    let young = state.registry.collect_garbage_older_than(Duration::from_secs(3600)).await.unwrap();
    assert!(!young.stale_uploads.contains(&key.to_string()), "inside the grace period: {young:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = state.registry.collect_garbage_older_than(Duration::from_secs(1)).await.unwrap();
    assert!(report.stale_uploads.contains(&key.to_string()), "past the grace period: {report:?}");
    assert!(upload.complete().await.is_err(), "an aborted upload cannot complete");
}
