//! Headless Chromium for tests that look at a page as a person would: find the browser, run it
//! with its own profile, read the console errors from its log, and attributes from a dumped DOM.

use super::wait_with_timeout;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The browser on PATH (Debian's `chromium`), if any.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs headless Chromium on `url` with its own profile; returns (stdout, stderr).
pub fn run_chromium(browser: &Path, profile: &Path, extra: &[&str], url: &str) -> (String, String) {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn chromium");
    let out = wait_with_timeout(child, Duration::from_secs(180), "chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lines of Chromium's log that report a script error or console message from the page.
pub fn page_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("Uncaught") || l.contains(":CONSOLE("))
        .collect()
}

/// The value of `attr` on the element with `id` in a dumped DOM.
pub fn attr_of(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attr}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..from + tag[from..].find('"')?].to_string())
}

/// The browser, or `None` with a printed reason when it is missing and this is not root (as root
/// the test command installs it, so a missing browser is a failure).
pub fn chromium_or_skip() -> Option<PathBuf> {
    match chromium() {
        Some(browser) => Some(browser),
        None if is_root() => panic!(
            "chromium is not installed: `apt-get install chromium` (tests/run-all.sh does as root)"
        ),
        None => {
            println!("SKIP: chromium is not installed and this is not root (tests/run-all.sh installs it as root)");
            None
        }
    }
}
