//! Headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`
//! (chromedriver) on this machine, spoken to with `fantoccini`.
//!
//! `fantoccini` rather than a DevTools-protocol crate (`chromiumoxide`): it is a thin
//! WebDriver client on the hyper stack the workspace already builds, where the CDP crates
//! compile thousands of generated protocol types; clicks, typing, scripts and screenshots
//! are all the dashboard test needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &[&str] = &["/usr/lib/chromium/chromium", "/usr/bin/chromium"];
const DRIVER: &str = "/usr/bin/chromedriver";

/// Where Chromium and chromedriver are, or why they cannot run here.
pub fn installed() -> Result<(PathBuf, PathBuf), String> {
    let chromium = CHROMIUM.iter().map(PathBuf::from).find(|p| p.exists());
    match (chromium, Path::new(DRIVER).exists()) {
        (Some(chromium), true) => Ok((chromium, DRIVER.into())),
        _ => Err(format!(
            "headless Chromium is not installed ({} and {DRIVER}; Debian packages `chromium` and `chromium-driver`, installed by tests/run.sh)",
            CHROMIUM.join(" or ")
        )),
    }
}

/// A Chromium session; chromedriver is stopped when this is dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless window of 1400 × 1000.
    pub async fn start(chromium: &Path, driver: &Path) -> anyhow::Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        match session(chromium, port).await {
            Ok(client) => Ok(Browser { client, driver }),
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                Err(e)
            }
        }
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) until it returns true.
    pub async fn wait_js(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.client.execute(script, args.clone()).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css`, waiting for it to appear first.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css).await?.click().await.with_context(|| format!("clicking {css}"))
    }

    /// Types `text` into the element matching `css` (after clearing it).
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let input = self.find(css).await?;
        input.clear().await?;
        input.send_keys(text).await.with_context(|| format!("typing into {css}"))
    }

    pub async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element {css}"))
    }

    /// A real mouse click at (`x`, `y`) CSS pixels from the top-left corner of `css`,
    /// scrolled into view first.
    pub async fn click_at(&self, css: &str, x: f64, y: f64) -> anyhow::Result<()> {
        self.find(css).await?;
        let script = "const [css, x, y] = arguments;
            const el = document.querySelector(css);
            window.scrollBy(0, el.getBoundingClientRect().top + y - innerHeight / 2);
            const r = el.getBoundingClientRect();
            return [r.left + x, r.top + y];";
        let at = self.client.execute(script, vec![json!(css), json!(x), json!(y)]).await?;
        let (Some(vx), Some(vy)) = (at[0].as_f64(), at[1].as_f64()) else {
            bail!("no position for {css}: {at}");
        };
        let pointer = MouseActions::new("mouse".into())
            .then(PointerAction::MoveTo { duration: None, x: vx.round(), y: vy.round() })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
        self.client.perform_actions(pointer).await?;
        Ok(())
    }

    /// Saves a PNG of the window as `dir/name.png`, prints its path and returns it.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        println!("screenshot: {}", path.display());
        Ok(path)
    }
}

async fn session(chromium: &Path, port: u16) -> anyhow::Result<Client> {
    let capabilities = json!({ "goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--hide-scrollbars", "--no-first-run"],
    }});
    let Value::Object(capabilities) = capabilities else { unreachable!("a JSON object") };
    let started = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return Ok(client),
            Err(e) if started.elapsed() > Duration::from_secs(20) => {
                bail!("chromedriver on port {port} gave no session: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
