//! A real headless browser (Debian's `chromium`) for the report's `timeline.html`. Outside CI
//! a missing chromium skips the test that needs it; with `CI=true` it fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser, or `None` (the test skips; in CI it panics).
pub fn require_chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs chromium (scripts/install-deps installs it), and CI=true forbids skipping it");
        }
        eprintln!("skipped: needs chromium (scripts/install-deps installs it)");
    }
    found
}

/// Runs chromium headless on `page` with `args`, for at most a minute; returns its stdout.
fn chromium(browser: &Path, page: &Path, args: &[String]) -> String {
    let profile = tempdir("chromium-profile");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1400,1000",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!(
            "file://{}",
            page.canonicalize().expect("page exists").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait works").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s on {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&profile);
    reader.join().expect("reader ends")
}

fn tempdir(name: &str) -> PathBuf {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// What the page looked like once its script ran.
#[derive(Debug)]
pub struct Loaded {
    /// The DOM after the scripts ran.
    pub dom: String,
    /// A screenshot of the page (1400×1000).
    pub screenshot: PathBuf,
}

/// Loads `page`, dumps its DOM and takes a screenshot named `name` (kept under the target
/// directory's `screenshots/`, and next to the page as `timeline.png`).
pub fn load(browser: &Path, page: &Path, name: &str) -> Loaded {
    let dom = chromium(browser, page, &["--dump-dom".to_string()]);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let screenshot = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        browser,
        page,
        &[format!("--screenshot={}", screenshot.display())],
    );
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "not a PNG: {}",
        screenshot.display()
    );
    if let Some(dir) = page.parent() {
        std::fs::write(dir.join("timeline.png"), &png).expect("screenshot copied");
    }
    Loaded { dom, screenshot }
}

/// The page rendered without a script error and shows the failing step on screen.
pub fn assert_rendered_with_failing_step(loaded: &Loaded, step: usize) {
    eprintln!("screenshot: {}", loaded.screenshot.display());
    let dom = &loaded.dom;
    assert!(
        dom.contains(r#"data-rendered="ok""#),
        "the page's script did not finish rendering: {}",
        &dom[..dom.len().min(3000)]
    );
    assert!(
        !dom.contains(r#"data-errors="true""#),
        "the page reported a script error: {}",
        dom.split(r#"id="errors""#).nth(1).unwrap_or("")
    );
    assert!(
        dom.contains(r#"data-failing-visible="true""#),
        "the failing step is not on screen"
    );
    assert!(dom.contains(r#"id="failing-marker""#), "no failing marker");
    assert!(
        dom.contains(&format!("Step {step} failed")),
        "the page does not say step {step} failed"
    );
    assert!(dom.contains("<svg"), "no timeline drawn");
}
