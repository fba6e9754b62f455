//! A second, private `docker-registry` for tests that move images between sites (offline
//! packages): its own loopback port and storage, stopped when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct ImageRegistry {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ImageRegistry {
    /// Starts one, or returns `None` with the reason printed when `docker-registry` cannot
    /// run here.
    pub async fn start() -> Option<ImageRegistry> {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = match Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("skipped: cannot run docker-registry ({e}); install Debian's docker-registry");
                return None;
            }
        };
        let registry = ImageRegistry { child, addr, _dir: dir };
        for _ in 0..100 {
            if reqwest::get(format!("http://{addr}/v2/")).await.is_ok_and(|r| r.status().is_success()) {
                return Some(registry);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("docker-registry did not start on {addr}");
    }

    /// `host:port`, as image references name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for ImageRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
