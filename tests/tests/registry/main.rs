//! The registry over real HTTP against SQLite and the local file system (and, when the test
//! script started one, a Garage S3 node; and a real image registry for offline packages).

mod api;
mod crash;
mod offline;
mod replicas;
mod s3_uploads;
mod storage;
mod support;
