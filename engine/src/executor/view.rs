//! The live view of running steps: one progress line per step (indicatif), on standard error
//! when it is a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::step::scope::Scope;

/// Whether the view would be visible.
pub(crate) fn enabled() -> bool {
    std::io::stderr().is_terminal()
}

/// A thread that redraws the running steps' progress until dropped.
pub(crate) struct View {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl View {
    pub(crate) fn start(scope: &Arc<Scope>) -> View {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let scope = Arc::clone(scope);
            std::thread::Builder::new()
                .name("milonga-progress".into())
                .spawn(move || draw(&scope, &stop))
                .ok()
        };
        View { stop, thread }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Items per second, short: `812/s`, `45.2k/s`, `1.96M/s`.
fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2}M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1}k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}/s")
    }
}

fn draw(scope: &Scope, stop: &AtomicBool) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let counted =
        ProgressStyle::with_template("{prefix:.bold} {bar:30} {pos}/{len} ({msg}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    let open = ProgressStyle::with_template("{prefix:.bold} {spinner} {pos} items ({msg})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let running = scope.running();
        bars.retain(|id, bar| {
            let keep = running.iter().any(|(r, _)| r == id);
            if !keep {
                bar.finish_and_clear();
                multi.remove(bar);
            }
            keep
        });
        for (id, progress) in running {
            let bar = bars.entry(id.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::no_length());
                bar.set_style(open.clone());
                bar.set_prefix(id.clone());
                bar
            });
            if let Some(len) = progress.length().filter(|&l| bar.length() != Some(l)) {
                bar.set_style(counted.clone());
                bar.set_length(len);
            }
            bar.set_position(progress.position());
            bar.set_message(rate(progress.rate()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    let _ = multi.clear();
}
