//! The job runner: every background job of the process (container creations and lifecycle
//! operations on Proxmox, certificate orders) runs here, as a task of the process's
//! [`TaskTracker`], with bounded concurrency and a `job{job, kind}` span.
//!
//! The runner owns a job's status: `running` once it has a permit, then `success`, or `failure`
//! with a last line `failed: <the JobError>`. On shutdown (the process's
//! [`CancellationToken`]) a queued job does not start, and a running one has `grace` to finish;
//! after that its future is dropped and the job is either marked `cancelled`
//! ([`OnShutdown::Cancel`]) or left active for [`super::Jobs::reconcile`] at the next start
//! ([`OnShutdown::Reconcile`]). Either way a line says what happened, before the binary closes
//! the pool. A store write the runner cannot make is logged, never dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use siteward_store::{JobId, JobState, Store};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::JobError;

/// How long a running job may still take after a shutdown signal, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(4);

/// What a shutdown leaves of a job that did not finish within the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnShutdown {
    /// Marked `cancelled`, with a line saying so.
    Cancel,
    /// Left `pending` or `running`, with a line saying so: [`super::Jobs::reconcile`] finishes
    /// or undoes it against Proxmox at the next start (a creation writes its VMID ahead).
    Reconcile,
}

/// One job to run.
#[derive(Debug)]
pub struct Job {
    /// Its row in `jobs`.
    pub id: JobId,
    /// What it does, for the span (`create_container`, `certificate`, …).
    pub kind: &'static str,
    /// What a shutdown leaves of it.
    pub on_shutdown: OnShutdown,
    /// Jobs holding the same lock run one after another (one job at a time per container);
    /// a job waits for it before it takes a permit.
    pub exclusive: Option<Arc<Mutex<()>>>,
}

impl Job {
    /// A job that a shutdown cancels.
    pub fn new(id: JobId, kind: &'static str) -> Self {
        Self {
            id,
            kind,
            on_shutdown: OnShutdown::Cancel,
            exclusive: None,
        }
    }
}

/// Runs jobs on the process's task tracker; cheap to clone.
#[derive(Clone, Debug)]
pub struct Runner {
    store: Store,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    permits: Arc<Semaphore>,
    grace: Duration,
}

impl Runner {
    /// `concurrency` jobs at a time on `tracker`; after `shutdown`, running jobs get `grace`.
    pub fn new(
        store: Store,
        concurrency: usize,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Self {
        Self {
            store,
            tracker,
            shutdown,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            grace,
        }
    }

    /// A runner with a tracker and token of its own (tests, and state built without a process).
    pub fn standalone(store: Store, concurrency: usize) -> Self {
        Self::new(
            store,
            concurrency,
            TaskTracker::new(),
            CancellationToken::new(),
            DEFAULT_GRACE,
        )
    }

    /// A runner on the same tracker and shutdown with `concurrency` permits of its own, so one
    /// kind of job (slow certificate orders) cannot hold up another (container jobs).
    pub fn with_concurrency(&self, concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            ..self.clone()
        }
    }

    /// The store the runner records into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `work` as `job` in the background. `work` writes its own progress lines; its
    /// result becomes the job's status.
    pub fn spawn<F>(&self, job: Job, work: F)
    where
        F: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let span = tracing::info_span!("job", job = job.id.0, kind = job.kind);
        let this = self.clone();
        self.tracker.spawn(this.run(job, work).instrument(span));
    }

    async fn run<F>(self, job: Job, work: F)
    where
        F: Future<Output = Result<(), JobError>> + Send,
    {
        let ready = async {
            let exclusive = match job.exclusive.clone() {
                Some(lock) => Some(lock.lock_owned().await),
                None => None,
            };
            (exclusive, self.permits.clone().acquire_owned().await)
        };
        let (_exclusive, permit) = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                self.interrupted(&job, false).await;
                return;
            }
            ready = ready => ready,
        };
        // The semaphore is never closed; should it be, the job cannot run.
        let Ok(_permit) = permit else {
            self.interrupted(&job, false).await;
            return;
        };
        self.set_status(job.id, JobState::Running).await;
        let deadline = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = deadline => Err(JobError::Interrupted),
        };
        match outcome {
            Ok(()) => {
                tracing::info!("job succeeded");
                self.set_status(job.id, JobState::Success).await;
            }
            Err(JobError::Interrupted) => self.interrupted(&job, true).await,
            Err(e) => {
                tracing::warn!(error = %e, "job failed");
                if !e.reported() {
                    self.line(job.id, &format!("failed: {e}")).await;
                }
                self.set_status(job.id, JobState::Failure).await;
            }
        }
    }

    /// Records what a shutdown left of the job.
    async fn interrupted(&self, job: &Job, started: bool) {
        let when = if started {
            "before the job finished"
        } else {
            "before the job started"
        };
        tracing::warn!(started, on_shutdown = ?job.on_shutdown, "job interrupted by shutdown");
        match job.on_shutdown {
            OnShutdown::Cancel => {
                self.line(job.id, &format!("cancelled: the server stopped {when}"))
                    .await;
                self.set_status(job.id, JobState::Cancelled).await;
            }
            OnShutdown::Reconcile => {
                self.line(
                    job.id,
                    &format!(
                        "interrupted: the server stopped {when}; its next start finishes or undoes it"
                    ),
                )
                .await;
            }
        }
    }

    /// Appends a progress line; a failure is logged (the job goes on).
    pub async fn line(&self, job: JobId, line: &str) {
        if let Err(e) = self.store.job_log(job, line).await {
            tracing::error!(error = %e, job = job.0, line, "recording a job line failed");
        }
    }

    async fn set_status(&self, job: JobId, status: JobState) {
        if let Err(e) = self.store.set_job_status(job, status).await {
            tracing::error!(error = %e, job = job.0, ?status, "recording the job's status failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siteward_store::{HashCost, SecretBox};

    const CHEAP: HashCost = HashCost {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    struct Fixture {
        store: Store,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        runner: Runner,
    }

    async fn fixture(concurrency: usize, grace: Duration) -> Fixture {
        let store = siteward_store::testing::fresh_store(SecretBox::from_key(&[7; 32]), CHEAP)
            .await
            .unwrap_or_else(|e| panic!("no test database: {e}"));
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let runner = Runner::new(
            store.clone(),
            concurrency,
            tracker.clone(),
            shutdown.clone(),
            grace,
        );
        Fixture {
            store,
            tracker,
            shutdown,
            runner,
        }
    }

    impl Fixture {
        async fn job(&self) -> JobId {
            self.store
                .create_job("test", "test:1", None)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }

        /// The job's status and lines.
        async fn state(&self, job: JobId) -> (JobState, Vec<String>) {
            let (j, lines) = self
                .store
                .job(job, None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            (j.status, lines.into_iter().map(|l| l.message).collect())
        }

        /// Waits until every job ran, without a shutdown.
        async fn drain(&self) {
            self.tracker.close();
            tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
                .await
                .unwrap_or_else(|_| panic!("jobs did not finish"));
        }

        /// Shutdown as the binary does it: cancel, close, wait (bounded).
        async fn shut_down(&self, within: Duration) {
            self.shutdown.cancel();
            self.tracker.close();
            tokio::time::timeout(within, self.tracker.wait())
                .await
                .unwrap_or_else(|_| panic!("jobs did not drain within {within:?}"));
        }
    }

    #[tokio::test]
    async fn a_job_records_success_and_a_failure_its_typed_error() {
        let f = fixture(2, Duration::from_secs(5)).await;
        let (ok, bad, told) = (f.job().await, f.job().await, f.job().await);
        f.runner.spawn(Job::new(ok, "test"), async { Ok(()) });
        f.runner
            .spawn(Job::new(bad, "test"), async { Err(JobError::NoVmid) });
        let store = f.store.clone();
        f.runner.spawn(Job::new(told, "test"), async move {
            store
                .job_log(told, "failed: the CA said no")
                .await
                .map_err(|e| JobError::store("progress", e))?;
            Err(JobError::Certificate {
                message: "the CA said no".into(),
                reported: true,
            })
        });
        f.drain().await;
        assert_eq!(f.state(ok).await, (JobState::Success, vec![]));
        assert_eq!(
            f.state(bad).await,
            (
                JobState::Failure,
                vec!["failed: the container has no VMID on Proxmox".into()]
            )
        );
        // Already described by its own lines: not said twice.
        assert_eq!(
            f.state(told).await,
            (JobState::Failure, vec!["failed: the CA said no".into()])
        );
    }

    #[tokio::test]
    async fn shutdown_waits_for_a_job_that_finishes_within_the_grace() {
        let f = fixture(1, Duration::from_secs(5)).await;
        let job = f.job().await;
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let store = f.store.clone();
        f.runner.spawn(Job::new(job, "test"), async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(500)).await;
            store
                .job_log(job, "finished its last step")
                .await
                .map_err(|e| JobError::store("progress", e))
        });
        started.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.state(job).await.0, JobState::Running);
        f.shut_down(Duration::from_secs(3)).await;
        assert_eq!(
            f.state(job).await,
            (JobState::Success, vec!["finished its last step".into()])
        );
    }

    #[tokio::test]
    async fn a_job_over_the_grace_is_cancelled_or_left_for_reconciliation() {
        let f = fixture(3, Duration::from_millis(300)).await;
        let (cancel, reconcile) = (f.job().await, f.job().await);
        let (tx, mut started) = tokio::sync::mpsc::channel(2);
        for (job, on_shutdown) in [
            (cancel, OnShutdown::Cancel),
            (reconcile, OnShutdown::Reconcile),
        ] {
            let tx = tx.clone();
            let job = Job {
                on_shutdown,
                ..Job::new(job, "test")
            };
            f.runner.spawn(job, async move {
                let _ = tx.send(()).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            });
        }
        for _ in 0..2 {
            started
                .recv()
                .await
                .unwrap_or_else(|| panic!("not started"));
        }
        let begun = tokio::time::Instant::now();
        f.shut_down(Duration::from_secs(3)).await;
        assert!(begun.elapsed() >= Duration::from_millis(300), "no grace");
        assert_eq!(
            f.state(cancel).await,
            (
                JobState::Cancelled,
                vec!["cancelled: the server stopped before the job finished".into()]
            )
        );
        let (status, lines) = f.state(reconcile).await;
        assert_eq!(status, JobState::Running, "left for reconciliation");
        assert!(
            lines == ["interrupted: the server stopped before the job finished; its next start finishes or undoes it"],
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn queued_jobs_do_not_start_after_shutdown() {
        let f = fixture(1, Duration::from_millis(200)).await;
        let (busy, queued, after) = (f.job().await, f.job().await, f.job().await);
        let (tx, started) = tokio::sync::oneshot::channel();
        f.runner.spawn(Job::new(busy, "test"), async move {
            let _ = tx.send(());
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        started.await.unwrap_or_else(|e| panic!("{e}"));
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        f.runner.spawn(Job::new(queued, "test"), async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
        f.shut_down(Duration::from_secs(3)).await;
        // Spawned after the shutdown: recorded at once, never run.
        let flag = ran.clone();
        f.runner.spawn(
            Job {
                on_shutdown: OnShutdown::Reconcile,
                ..Job::new(after, "test")
            },
            async move {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            },
        );
        tokio::time::timeout(Duration::from_secs(3), f.tracker.wait())
            .await
            .unwrap_or_else(|_| panic!("not drained"));
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "a queued job ran"
        );
        assert_eq!(
            f.state(queued).await,
            (
                JobState::Cancelled,
                vec!["cancelled: the server stopped before the job started".into()]
            )
        );
        let (status, lines) = f.state(after).await;
        assert_eq!(status, JobState::Pending, "{lines:?}");
    }

    #[tokio::test]
    async fn jobs_sharing_a_lock_run_one_after_another() {
        let f = fixture(2, Duration::from_secs(5)).await;
        let lock = Arc::new(Mutex::new(()));
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = f.job().await;
            ids.push(id);
            let (inside, most) = (inside.clone(), most.clone());
            let job = Job {
                exclusive: Some(lock.clone()),
                ..Job::new(id, "test")
            };
            f.runner.spawn(job, async move {
                let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            });
        }
        f.drain().await;
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
        for id in ids {
            assert_eq!(f.state(id).await.0, JobState::Success);
        }
    }
}
