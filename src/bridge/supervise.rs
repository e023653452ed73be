//! Keeps a background task alive: runs it, and when it ends or panics, reports why and runs a
//! new one after a backoff. The bridges' connection loops never end on their own (they retry
//! the broker themselves), so an end here is a bug, a panic most likely: one bad input must not
//! stop a bridge for good while `/healthz` and `/readyz` go on saying it is fine.
//!
//! It knows nothing of brokers: the caller's `down` callback marks its link not connected and
//! counts the restart, and the state a task must not lose across a restart (its outbound
//! queue, say) lives outside the task, for the next one to take up.

use std::any::Any;
use std::future::Future;
use std::time::{Duration, Instant};

/// The first restart waits this long; each one after a short run waits twice as long …
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// … up to this: a task that keeps failing is retried every few seconds, not hammered.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// A run this long counts as healthy: the next failure starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// How long to wait before restart number `failures + 1` of a task that keeps failing.
pub fn restart_delay(failures: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_DELAY)
}

/// Runs `make_task()` on its own tokio task, again and again: after each end (`ended`) or
/// panic (`panicked: <message>`), calls `down(name, reason)`, then waits [`restart_delay`].
/// Returns only when the runtime cancels the task (shutdown).
pub async fn supervise<F, Fut, D>(name: &'static str, mut down: D, mut make_task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    D: FnMut(&str),
{
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let reason = match tokio::spawn(make_task()).await {
            Ok(()) => {
                tracing::error!(task = name, "task ended; restarting it");
                "ended".to_owned()
            }
            Err(error) if error.is_panic() => {
                let message = panic_message(error.into_panic());
                tracing::error!(task = name, panic = %message, "task panicked; restarting it");
                format!("panicked: {message}")
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        };
        down(&reason);
        if started.elapsed() > HEALTHY_RUN {
            failures = 0;
        }
        tokio::time::sleep(restart_delay(failures)).await;
        failures = failures.saturating_add(1);
    }
}

/// The text a panic was raised with (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    #[test]
    fn restart_delay_doubles_and_is_capped_at_a_few_seconds() {
        assert_eq!(restart_delay(0), Duration::from_millis(100));
        assert_eq!(restart_delay(1), Duration::from_millis(200));
        assert_eq!(restart_delay(3), Duration::from_millis(800));
        assert_eq!(restart_delay(6), MAX_DELAY);
        assert_eq!(restart_delay(u32::MAX), MAX_DELAY);
    }

    #[tokio::test]
    async fn a_task_that_panics_is_reported_and_run_again() {
        let runs = Arc::new(AtomicU32::new(0));
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let mut done = Some(done);
        let supervisor = tokio::spawn({
            let runs = Arc::clone(&runs);
            let reasons = Arc::clone(&reasons);
            supervise(
                "test",
                move |reason: &str| reasons.lock().unwrap().push(reason.to_owned()),
                move || {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    let done = if run == 2 { done.take() } else { None };
                    async move {
                        match run {
                            0 => panic!("boom {}", 7),
                            1 => {}
                            _ => {
                                if let Some(done) = done {
                                    let _ = done.send(());
                                }
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                },
            )
        });
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("the third run starts within the backoff")
            .expect("the third run signals");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(
            *reasons.lock().unwrap(),
            ["panicked: boom 7".to_owned(), "ended".to_owned()]
        );
        supervisor.abort();
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(3u8)), "(no message)");
    }
}
