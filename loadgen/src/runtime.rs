//! Loadgen's executor: `async-executor`'s work-stealing executor run by one thread per CPU,
//! each driving its own reactor (`reactor.rs`: the sockets and timers made on that thread)
//! while it waits. The client library is executor-agnostic, so this small runtime is all
//! loadgen needs. Threads inherit the CPU affinity of the thread that creates the runtime (see
//! `system::pin_current_thread`).
//!
//! One thread per CPU ([`default_threads`]): a second thread on one CPU only adds hand-offs.
//! Under async-io's reactor one more thread than CPUs had been better, because async-io's own
//! helper thread took the reactor from a lone executor thread (2.3 ms issue-lag p90 at 2,000
//! sends/s); loadgen's reactor has no helper thread.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_executor::{Executor, Task};

use crate::target::Spawner;

/// The executor and its worker threads; dropping it stops them.
pub struct Runtime {
    handle: Handle,
    stop: Option<flume::Sender<()>>,
    workers: Vec<JoinHandle<()>>,
}

/// Spawns tasks on the runtime from anywhere.
#[derive(Clone)]
pub struct Handle {
    executor: Arc<Executor<'static>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("threads", &(self.workers.len() + 1)).finish()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle")
    }
}

impl Runtime {
    /// A runtime of `threads` threads: the caller's own (in [`Runtime::block_on`]) and
    /// `threads - 1` workers.
    pub fn new(threads: usize) -> std::io::Result<Runtime> {
        assert!(threads >= 1, "at least one thread");
        let executor = Arc::new(Executor::new());
        let (stop, stopped) = flume::bounded::<()>(1);
        let mut workers = Vec::with_capacity(threads - 1);
        for index in 1..threads {
            let executor = executor.clone();
            let stopped = stopped.clone();
            let worker = std::thread::Builder::new().name(format!("loadgen-{index}")).spawn(move || {
                crate::reactor::block_on(executor.run(async {
                    // Ends when the runtime drops its sender.
                    let _ = stopped.recv_async().await;
                }));
            })?;
            workers.push(worker);
        }
        Ok(Runtime { handle: Handle { executor }, stop: Some(stop), workers })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Threads running tasks, the caller's included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `future` to completion on this thread, which also runs other tasks meanwhile.
    ///
    /// With worker threads, the sockets and timers made here go to the shared reactor: the
    /// tasks that use them may go on running on the workers after this returns, when nothing
    /// would serve this thread's reactor. Alone, this thread is the only one that runs tasks,
    /// so its own reactor serves them (and nothing runs between two calls anyway).
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        let run = self.handle.executor.run(future);
        if self.workers.is_empty() {
            crate::reactor::block_on(run)
        } else {
            crate::reactor::block_on_passing_through(run)
        }
    }
}

/// The thread count to use when `cpus` CPUs may be used: one each (see the module notes).
pub fn default_threads(cpus: usize) -> usize {
    cpus.max(1)
}

impl Drop for Runtime {
    fn drop(&mut self) {
        drop(self.stop.take());
        for worker in self.workers.drain(..) {
            // A worker that panicked already printed why; the run's result stands on its own.
            let _ = worker.join();
        }
    }
}

impl Handle {
    pub fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        self.executor.spawn(future)
    }

    /// A [`Spawner`] for target adapters (detached tasks).
    pub fn spawner(&self) -> Spawner {
        let executor = self.executor.clone();
        Spawner::new(move |task| executor.spawn(task).detach())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;
    use std::io::Write;
    use std::time::Duration;

    // A socket connected in the caller's `block_on` keeps being served by the workers after
    // that call has returned (it was registered where a worker-run task can still be woken).
    #[test]
    fn a_socket_made_in_block_on_is_served_after_it_returns() {
        let runtime = Runtime::new(2).expect("threads start");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let stream = runtime.block_on(crate::reactor::Stream::connect(address)).expect("connect");
        let (mut peer, _) = listener.accept().expect("accept");
        let (sender, received) = std::sync::mpsc::channel();
        runtime
            .handle()
            .spawn(async move {
                let mut byte = [0u8; 1];
                let read = (&stream).read_exact(&mut byte).await.map(|()| byte[0]);
                let _ = sender.send(read.ok());
            })
            .detach();
        // The caller is out of any `block_on` from here on: only the worker runs tasks.
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(&[42]).expect("write");
        let byte = received.recv_timeout(Duration::from_secs(5)).expect("the worker's read ends within 5 s");
        assert_eq!(byte, Some(42));
    }

    // Tasks run on every thread of the runtime and their results come back to the caller.
    #[test]
    fn tasks_spawned_on_the_runtime_complete() {
        let runtime = Runtime::new(3).expect("threads start");
        let handle = runtime.handle();
        let total = runtime.block_on(async {
            let tasks: Vec<Task<u64>> = (0..100u64).map(|value| handle.spawn(async move { value })).collect();
            let mut total = 0;
            for task in tasks {
                total += task.await;
            }
            total
        });
        assert_eq!(total, 4950);
    }
}
