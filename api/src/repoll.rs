//! A future that is polled again at once, inside the same poll, when it wakes its own task
//! while being polled: for the task that serves one client connection (HTTP/1.1 or HTTP/2)
//! and the requests on it.
//!
//! Why: such a task wakes itself all the time. Over gRPC, an answer handed to h2 wakes the
//! connection's waker, and a DATA frame read by the connection wakes the call waiting for it;
//! over REST, a request's start notifies the connection's idle watch. Each of those wakers is
//! this task's own. Tokio takes a task that woke itself while running as one that yielded:
//! it requeues the task and unparks an idle worker to share the work. On two cores that
//! worker is often the one parked in the I/O driver, so each such wake cost a write to its
//! eventfd and a spurious `epoll_wait` return, with the context switches that go with them.
//! Measured on a single node with one client: a gRPC put cost the node 2.1 `epoll_wait`s, 1.1
//! `write`s and 5.7 context switches before, 1.1, 0.04 and 3.2 after; a stale read 2.2
//! context switches before and 1.0 after, over either protocol (REST's node CPU per read 80
//! to 40 µs).
//!
//! Here the inner future sees a waker of its own. A wake while the inner future is being polled
//! is only noted, and the poll runs again before returning; any other wake goes on to the
//! task. Invariant: no wake is lost. A wake that finds the inner poll running is seen by the
//! check after that poll (every flag is `SeqCst`); one that comes later wakes the task.
//! A panic in the inner poll leaves `polling` set, so the wrapper must not be polled again
//! after one: the connections' tasks end on a panic (their handlers' panics are caught inside).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The most polls of the inner future in one poll of the task. Past it, the task yields to
/// the scheduler as before, so that a future that keeps waking itself cannot keep its worker
/// from every other task. Such wakes are fairness yields: hyper's HTTP/1.1 dispatcher yields
/// after 16 turns of its loop, and `FuturesUnordered` after polling each of its futures once.
/// (Tokio's own cooperative budget defers its wake until the task's poll is over, so a task
/// whose budget is spent goes back to the scheduler at once; the loop below stops there too.)
pub const POLLS_PER_WAKE_MAX: usize = 16;

/// See the module documentation.
pub struct Repoll<F> {
    inner: Pin<Box<F>>,
    relay: Arc<Relay>,
    waker: Waker,
}

/// The inner future's waker.
struct Relay {
    /// The task's waker, as of its latest poll.
    task: AtomicWaker,
    /// Set while the inner future is being polled.
    polling: AtomicBool,
    /// Set by any wake; cleared before each poll of the inner future.
    woken: AtomicBool,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

impl<F: Future> Repoll<F> {
    /// `inner`, polled again in place when it wakes itself.
    pub fn new(inner: F) -> Self {
        let relay = Arc::new(Relay {
            task: AtomicWaker::new(),
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
        });
        Repoll {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&relay)),
            relay,
        }
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.relay.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..POLLS_PER_WAKE_MAX {
            this.relay.woken.store(false, Ordering::SeqCst);
            this.relay.polling.store(true, Ordering::SeqCst);
            let polled = this.inner.as_mut().poll(&mut inner_cx);
            this.relay.polling.store(false, Ordering::SeqCst);
            if polled.is_ready() {
                return polled;
            }
            // A wake during the poll only set `woken`; one from now on wakes the task.
            if !this.relay.woken.swap(false, Ordering::SeqCst) {
                return Poll::Pending;
            }
            // Tokio's budget for this poll is spent: every resource would answer Pending, so
            // polling again here is wasted. The task goes back to the scheduler.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the task's wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        (count, waker)
    }

    #[test]
    fn a_future_that_wakes_itself_is_polled_again_in_place_without_waking_the_task() {
        // Given a future that wakes itself on its first two polls and is ready on its third,
        let mut polls = 0;
        let mut future = Repoll::new(std::future::poll_fn(move |cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        }));
        let (count, waker) = task();
        // when the task polls it once,
        let polled = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
        // then it is ready after three polls of the inner future, and the task was never woken.
        assert_eq!(polled, Poll::Ready(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_wake_after_the_poll_wakes_the_task() {
        // Given a pending future whose waker is kept,
        let kept: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        let keep = Arc::clone(&kept);
        let mut future = Repoll::new(std::future::poll_fn(move |cx| {
            *keep.lock().expect("not poisoned") = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        let (count, waker) = task();
        assert!(
            Pin::new(&mut future)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        // when it is woken once the poll is over (as by another task or the I/O driver),
        kept.lock()
            .expect("not poisoned")
            .take()
            .expect("the future kept its waker")
            .wake();
        // then the task is woken.
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_to_the_scheduler_after_the_bound() {
        // Given a future that wakes itself on every poll,
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let mut future = Repoll::new(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        let (count, waker) = task();
        // when the task polls it,
        let polled = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
        // then it is polled at most the bound's times, and the task is woken to come back.
        assert!(polled.is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), POLLS_PER_WAKE_MAX);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wake_from_another_thread_during_the_poll_is_not_lost() {
        // Given a future whose first poll is woken from another thread while it runs,
        let mut polls = 0;
        let mut future = Repoll::new(std::future::poll_fn(move |cx| {
            polls += 1;
            if polls == 1 {
                let waker = cx.waker().clone();
                std::thread::spawn(move || waker.wake())
                    .join()
                    .expect("the waking thread ran");
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        }));
        let (count, waker) = task();
        // when the task polls it,
        let polled = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
        // then the wake is honoured by polling again at once.
        assert_eq!(polled, Poll::Ready(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }
}
