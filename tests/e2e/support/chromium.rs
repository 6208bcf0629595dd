//! Headless Chromium driven through the DevTools protocol on a pipe: pages, script evaluation,
//! waiting for a URL, the sign-in form, screenshots.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::auth::PASSWORD;
use crate::harness::TestResult;

/// Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands
/// on fd 3, replies on fd 4, each message ended by a NUL byte). A shell maps the child's stdin
/// and stdout onto those descriptors, so no unsafe `pre_exec` is needed.
pub(crate) struct Chromium {
    child: Child,
    stdin: tokio::process::ChildStdin,
    stdout: BufReader<tokio::process::ChildStdout>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Chromium {
    pub(crate) async fn start() -> TestResult<Self> {
        let profile = tempfile::tempdir()?;
        let script = format!(
            "exec chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
--disable-component-update --no-first-run --disable-dev-shm-usage --ignore-certificate-errors \
'--host-resolver-rules=MAP *.lab.test 127.0.0.1' --user-data-dir={} --remote-debugging-pipe about:blank \
3<&0 4>&1 0</dev/null 1>&2",
            profile.path().display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start chromium (apt-get install chromium): {e}"))?;
        let stdin = child.stdin.take().ok_or("stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
            next: 0,
            _profile: profile,
        })
    }

    pub(crate) async fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> TestResult<Value> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.stdin.write_all(&bytes).await?;
        self.stdin.flush().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut buf = Vec::new();
            let n = tokio::time::timeout_at(deadline.into(), self.stdout.read_until(0, &mut buf))
                .await??;
            if n == 0 {
                return Err("chromium closed the pipe".into());
            }
            buf.pop();
            let v: Value = serde_json::from_slice(&buf)?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method}: {e}").into());
                }
                return Ok(v["result"].clone());
            }
        }
    }

    pub(crate) async fn eval(&mut self, session: &str, expr: &str) -> TestResult<Value> {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true }),
            )
            .await?;
        Ok(r["result"]["value"].clone())
    }

    /// Opens a page and returns its session id.
    pub(crate) async fn new_page(&mut self) -> TestResult<String> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"].as_str().ok_or("targetId")?.to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("sessionId")?
            .to_owned();
        self.call(Some(&session), "Page.enable", json!({})).await?;
        Ok(session)
    }

    /// Visits the protected `app` URL, expects to land on the `login` page, types `user`'s
    /// credentials into the real form and presses the button; returns the body text of `app`
    /// once the browser is back there.
    pub(crate) async fn sign_in(
        &mut self,
        session: &str,
        app: &str,
        login: &str,
        user: &str,
    ) -> TestResult<String> {
        self.call(Some(session), "Page.navigate", json!({ "url": app }))
            .await?;
        let text = self.wait_for(session, login).await?;
        assert!(text.contains("Sign in"), "{text}");
        let fill = format!(
            "document.getElementById('username').value = '{user}'; document.getElementById('password').value = '{PASSWORD}'; document.querySelector('button[type=submit]').click(); true"
        );
        self.eval(session, &fill).await?;
        self.wait_for(session, app).await
    }

    /// Waits until the page has loaded a URL starting with `prefix`; returns the body text.
    pub(crate) async fn wait_for(&mut self, session: &str, prefix: &str) -> TestResult<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .eval(session, "JSON.stringify([document.readyState, location.href, document.body ? document.body.innerText : ''])")
                .await
                .unwrap_or(Value::Null);
            if let Some(text) = v.as_str() {
                let arr: Value = serde_json::from_str(text)?;
                if arr[0] == "complete" && arr[1].as_str().is_some_and(|u| u.starts_with(prefix)) {
                    return Ok(arr[2].as_str().unwrap_or("").to_owned());
                }
                if Instant::now() > deadline {
                    return Err(format!("waiting for {prefix}: at {arr}").into());
                }
            } else if Instant::now() > deadline {
                return Err(format!("waiting for {prefix}: no page").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Chromium {
    /// Evaluates `expr`, waiting for the promise it returns; the value.
    pub(crate) async fn eval_await(&mut self, session: &str, expr: &str) -> TestResult<Value> {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        Ok(r["result"]["value"].clone())
    }

    /// Navigates to `url` (without waiting).
    pub(crate) async fn go(&mut self, session: &str, url: &str) -> TestResult {
        self.call(Some(session), "Page.navigate", json!({ "url": url }))
            .await?;
        Ok(())
    }

    /// Waits until the page has loaded and `condition` (a script expression) is true; returns
    /// the body text. Fails with the page's URL and text after 20 s.
    pub(crate) async fn wait_until(
        &mut self,
        session: &str,
        condition: &str,
    ) -> TestResult<String> {
        let expr = format!(
            "JSON.stringify([document.readyState === 'complete' && !!({condition}), location.href, document.body ? document.body.innerText : ''])"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.eval(session, &expr).await.unwrap_or(Value::Null);
            let arr: Value = v
                .as_str()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null);
            if arr[0] == true {
                return Ok(arr[2].as_str().unwrap_or("").to_owned());
            }
            if Instant::now() > deadline {
                return Err(format!("waiting for {condition}: at {arr}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The viewport: `width` CSS pixels wide, `mobile` for a phone.
    pub(crate) async fn viewport(
        &mut self,
        session: &str,
        width: u32,
        height: u32,
        mobile: bool,
    ) -> TestResult {
        self.call(
            Some(session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await?;
        Ok(())
    }

    /// A PNG of the whole page, written to `<target>/screenshots/<name>.png`; the path.
    pub(crate) async fn screenshot(
        &mut self,
        session: &str,
        name: &str,
    ) -> TestResult<std::path::PathBuf> {
        use base64::Engine;
        let shot = self
            .call(
                Some(session),
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await?;
        let data = shot["data"].as_str().ok_or("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
