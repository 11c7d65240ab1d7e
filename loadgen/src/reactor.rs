//! Loadgen's event loop: each runtime thread owns an epoll set in edge-triggered mode and a
//! timer list, and waits in one `epoll_pwait2` per turn.
//!
//! Why not `async-io`, which loadgen used before: its reactor (the `polling` crate) makes
//! several system calls per turn whatever happened (arm a timerfd, re-arm it in epoll, wait,
//! clear and re-arm its notifier), re-arms every socket in epoll after each read that would
//! block (one-shot mode), and hands the reactor between threads. Counted over 2 s of the `dm`
//! scenario at 5,000 sends/s, that was about 25 system calls and 4 context switches per send,
//! and loadgen's one core was the limit near 20,000 sends/s (docs/BENCHMARKS.md, "A loadgen
//! core per send, and dm side by side again"). Here a socket is registered once, a turn is one
//! wait, and a thread is woken through its eventfd only when a task it runs is woken from
//! another thread while it sleeps.
//!
//! A socket ([`Stream`]) registers when it is made, a timer ([`sleep_until`]) when it is first
//! polled, with the reactor of the thread doing so if that thread runs inside [`block_on`];
//! elsewhere (tests, helper threads) with one shared reactor that a background thread drives. A
//! thread keeps its reactor between `block_on` calls, and serves it only inside them: a socket
//! registered on a thread waits for that thread's next `block_on`. The runtime's workers are
//! always in one; its caller's thread is not, so when there are workers (whose tasks outlive
//! the caller's call) it uses [`block_on_passing_through`], which registers with the shared
//! reactor instead. A reactor may be woken from any thread.
//!
//! Each direction of a socket keeps one waker: one task reads and one task writes at a time,
//! which is how every connection in loadgen is driven.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite};

/// Events taken from epoll per turn; more wait for the next turn (epoll keeps them). It also
/// bounds the tasks one turn wakes, and so how long a timer that fell due waits behind them.
const EVENTS_PER_TURN_MAX: usize = 64;

/// The token of a reactor's own eventfd in its epoll set.
const WAKE_TOKEN: u64 = u64::MAX;

/// Runs `future` to completion on this thread, running the reactor of this thread while it
/// waits: sockets and timers made by tasks polled here register with it.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    block_on_registering(future, true)
}

/// [`block_on`] for a thread that other threads' tasks outlive: what is made here registers
/// with the shared reactor, which is always served, not with this thread's, which is served
/// only while this thread is in a `block_on`. This thread's reactor only wakes it.
pub fn block_on_passing_through<T>(future: impl Future<Output = T>) -> T {
    block_on_registering(future, false)
}

fn block_on_registering<T>(future: impl Future<Output = T>, register_here: bool) -> T {
    // One reactor per thread, kept between calls: sockets registered during one call (a setup)
    // are served again by the next (the load).
    let reactor = THREAD_REACTOR.with(|reactor| reactor.clone());
    let previous = CURRENT.with(|current| current.replace(register_here.then(|| reactor.clone())));
    let _restore = RestoreCurrent(previous);
    let notified = Arc::new(Notified { woken: AtomicBool::new(true), reactor: reactor.clone() });
    let waker = Waker::from(notified.clone());
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut events = Events::new();
    loop {
        if notified.woken.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
        }
        // Woken again while it ran: look at I/O without sleeping, then run it again.
        let wait = if notified.woken.load(Ordering::SeqCst) { Some(Duration::ZERO) } else { None };
        reactor.turn(&mut events, wait, &notified.woken);
    }
}

/// A future that completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, registered: None }
}

/// A future that completes after `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// `future`'s output, or `None` once `timeout` has passed.
pub async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(timeout).await;
        None
    })
    .await
}

/// A TCP connection registered with a reactor. Clones share the socket: one task may read
/// while another writes. `AsyncRead` and `AsyncWrite` are implemented for `Stream` and
/// `&Stream`.
#[derive(Clone, Debug)]
pub struct Stream {
    inner: Arc<StreamInner>,
}

impl Stream {
    /// Connects without blocking the thread.
    pub async fn connect(address: SocketAddr) -> io::Result<Stream> {
        let socket = start_connect(address)?;
        let stream = Stream::register(socket)?;
        // The connection is made when the socket turns writable, or has failed (which also
        // reads as writable; the error is taken below).
        loop {
            // The tick before the check: an edge after it, even one before the wait, ends the wait.
            let tick = stream.inner.source.write.tick.load(Ordering::SeqCst);
            if writable_now(stream.inner.socket.as_raw_fd()) {
                break;
            }
            std::future::poll_fn(|context| stream.inner.source.poll_changed(&stream.inner.source.write, tick, context))
                .await;
        }
        if let Some(error) = stream.inner.socket.take_error()? {
            return Err(error);
        }
        Ok(stream)
    }

    /// Registers a connected socket with the current thread's reactor.
    pub fn register(socket: TcpStream) -> io::Result<Stream> {
        socket.set_nonblocking(true)?;
        let reactor = Reactor::current();
        let source = reactor.register(socket.as_raw_fd())?;
        Ok(Stream { inner: Arc::new(StreamInner { socket, reactor, source }) })
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.inner.socket
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.socket.shutdown(how)
    }
}

/// A listening TCP socket registered with a reactor.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    reactor: Arc<Reactor>,
    source: Arc<Source>,
}

impl Listener {
    /// Binds and registers with the current thread's reactor.
    pub fn bind(address: SocketAddr) -> io::Result<Listener> {
        let socket = TcpListener::bind(address)?;
        socket.set_nonblocking(true)?;
        let reactor = Reactor::current();
        let source = reactor.register(socket.as_raw_fd())?;
        Ok(Listener { socket, reactor, source })
    }

    pub fn get_ref(&self) -> &TcpListener {
        &self.socket
    }

    /// The next connection, registered with the current thread's reactor.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (socket, address) =
            std::future::poll_fn(|context| self.source.poll_io(&self.source.read, context, || self.socket.accept()))
                .await?;
        Ok((Stream::register(socket)?, address))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.reactor.deregister(self.socket.as_raw_fd(), &self.source);
    }
}

/// A [`sleep_until`] future.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    /// The reactor holding this timer's waker, and the timer's key there.
    registered: Option<(Arc<Reactor>, (Instant, u64))>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some((reactor, key)) = self.registered.take() {
                lock(&reactor.timers).remove(&key);
            }
            return Poll::Ready(());
        }
        match &self.registered {
            Some((reactor, key)) => {
                let mut timers = lock(&reactor.timers);
                if let Some(waker) = timers.get_mut(key) {
                    waker.clone_from(context.waker());
                } else {
                    // A timer leaves the list only once its deadline has passed, which the
                    // check above would have seen; should it be missing anyway, arm it again
                    // rather than wait forever.
                    drop(timers);
                    reactor.add_timer(*key, context.waker().clone());
                }
            }
            None => {
                let reactor = Reactor::current();
                let key = (self.deadline, reactor.next_timer.fetch_add(1, Ordering::Relaxed));
                reactor.add_timer(key, context.waker().clone());
                self.registered = Some((reactor, key));
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((reactor, key)) = self.registered.take() {
            lock(&reactor.timers).remove(&key);
        }
    }
}

/// One thread's epoll set, its timers and its eventfd.
#[derive(Debug)]
pub struct Reactor {
    epoll: OwnedFd,
    /// Written when the reactor must wake up: a task was woken from another thread, or an
    /// earlier timer was added from one, while the reactor's thread slept.
    wake: OwnedFd,
    /// The reactor's thread is in (or about to enter) `epoll_pwait2`.
    sleeping: AtomicBool,
    sources: Mutex<Sources>,
    timers: Mutex<BTreeMap<(Instant, u64), Waker>>,
    next_timer: AtomicU64,
}

impl Reactor {
    fn new() -> io::Result<Reactor> {
        // SAFETY: plain system calls; each returned descriptor is checked before it is owned.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epoll` is a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // SAFETY: as above.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `wake` is a new descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let reactor = Reactor {
            epoll,
            wake,
            sleeping: AtomicBool::new(false),
            sources: Mutex::new(Sources::default()),
            timers: Mutex::new(BTreeMap::new()),
            next_timer: AtomicU64::new(0),
        };
        reactor.control(libc::EPOLL_CTL_ADD, reactor.wake.as_raw_fd(), WAKE_TOKEN)?;
        Ok(reactor)
    }

    /// The reactor of the current [`block_on`], or the shared one.
    fn current() -> Arc<Reactor> {
        CURRENT.with(|current| current.borrow().clone()).unwrap_or_else(|| shared_reactor().clone())
    }

    fn register(&self, fd: RawFd) -> io::Result<Arc<Source>> {
        let mut sources = lock(&self.sources);
        let token = sources.free.pop().unwrap_or(sources.slots.len());
        let source = Arc::new(Source { token, read: Direction::default(), write: Direction::default() });
        if token == sources.slots.len() {
            sources.slots.push(None);
        }
        if let Err(error) = self.control(libc::EPOLL_CTL_ADD, fd, token as u64) {
            sources.free.push(token);
            return Err(error);
        }
        sources.slots[token] = Some(source.clone());
        Ok(source)
    }

    fn deregister(&self, fd: RawFd, source: &Source) {
        // Failure means the descriptor is already gone from the set; nothing is left to undo.
        let _ = self.control(libc::EPOLL_CTL_DEL, fd, source.token as u64);
        let mut sources = lock(&self.sources);
        sources.slots[source.token] = None;
        sources.free.push(source.token);
    }

    fn control(&self, operation: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `event` outlives the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), operation, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn add_timer(&self, key: (Instant, u64), waker: Waker) {
        let mut timers = lock(&self.timers);
        let earliest = timers.keys().next().is_none_or(|first| key < *first);
        timers.insert(key, waker);
        drop(timers);
        // A sleeping reactor chose its timeout before this timer existed.
        if earliest && self.sleeping.load(Ordering::SeqCst) {
            self.notify();
        }
    }

    fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd. A full counter (EAGAIN) means
        // a wake-up is already pending, which is all this wants.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// One turn: waits for events (at most `wait`, or until the next timer), then wakes the
    /// tasks they are for and the timers that are due. `woken` is the flag of the task that
    /// drives this reactor: set after `sleeping`, it means "do not sleep".
    fn turn(&self, events: &mut Events, wait: Option<Duration>, woken: &AtomicBool) {
        let until_timer = lock(&self.timers).keys().next().map(|&(deadline, _)| deadline);
        let mut timeout = wait;
        if let Some(deadline) = until_timer {
            let left = deadline.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(left, |timeout| timeout.min(left)));
        }
        let sleeps = timeout != Some(Duration::ZERO);
        if sleeps {
            self.sleeping.store(true, Ordering::SeqCst);
            // A wake-up between the caller's check and `sleeping` would have seen it unset
            // and not written the eventfd: look again.
            if woken.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let count = wait_for_events(self.epoll.as_raw_fd(), &mut events.list, timeout);
        if sleeps {
            self.sleeping.store(false, Ordering::SeqCst);
        }
        let ready = &mut events.ready;
        {
            let sources = lock(&self.sources);
            for event in &events.list[..count] {
                let token = event.u64;
                if token == WAKE_TOKEN {
                    let mut value: u64 = 0;
                    // SAFETY: reads 8 bytes into a live u64; EAGAIN (already cleared) is fine.
                    let _ = unsafe { libc::read(self.wake.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
                    continue;
                }
                // A slot emptied since the event was queued gives nothing to wake.
                if let Some(Some(source)) = sources.slots.get(token as usize) {
                    ready.push((source.clone(), event.events));
                }
            }
        }
        for (source, flags) in ready.drain(..) {
            let flags = flags as libc::c_int;
            if flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                source.read.ended.store(true, Ordering::SeqCst);
            }
            if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                source.read.fire();
            }
            if flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                source.write.fire();
            }
        }
        if until_timer.is_some() {
            let now = Instant::now();
            {
                let mut timers = lock(&self.timers);
                while let Some(entry) = timers.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    events.due.push(entry.remove());
                }
            }
            events.due.drain(..).for_each(Waker::wake);
        }
    }
}

/// The readiness of one direction of a socket: a count of edges seen, and the task waiting
/// for the next one.
#[derive(Debug)]
struct Direction {
    tick: AtomicU64,
    waker: Mutex<Option<Waker>>,
    /// The tick at which a read came back short: the socket was drained then, and with edge
    /// triggering any byte since has moved the tick. Until it moves, a read would only find
    /// nothing (a wasted `recvfrom` per frame), so the reader waits at once.
    drained_at: AtomicU64,
    /// The peer has closed or the socket failed. That edge may have come with the data a short
    /// read took, and no edge follows it, so from then on every read goes to the socket.
    ended: AtomicBool,
}

impl Default for Direction {
    fn default() -> Direction {
        Direction {
            tick: AtomicU64::new(0),
            waker: Mutex::new(None),
            drained_at: AtomicU64::new(u64::MAX),
            ended: AtomicBool::new(false),
        }
    }
}

impl Direction {
    fn fire(&self) {
        self.tick.fetch_add(1, Ordering::SeqCst);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }
}

/// A registered socket's two directions.
#[derive(Debug)]
struct Source {
    token: usize,
    read: Direction,
    write: Direction,
}

impl Source {
    /// Pending until `direction` sees an edge after `tick`.
    fn poll_changed(&self, direction: &Direction, tick: u64, context: &mut Context<'_>) -> Poll<()> {
        if direction.tick.load(Ordering::SeqCst) != tick {
            return Poll::Ready(());
        }
        let mut waker = lock(&direction.waker);
        // An edge between the load above and this lock has already found no waker to wake.
        if direction.tick.load(Ordering::SeqCst) != tick {
            return Poll::Ready(());
        }
        match waker.as_mut() {
            Some(waker) => waker.clone_from(context.waker()),
            None => *waker = Some(context.waker().clone()),
        }
        Poll::Pending
    }

    /// Runs `attempt` (a non-blocking read or write) until it does not block, or waits for the
    /// direction's next edge.
    fn poll_io<T>(
        &self,
        direction: &Direction,
        context: &mut Context<'_>,
        mut attempt: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let tick = direction.tick.load(Ordering::SeqCst);
            match attempt() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if self.poll_changed(direction, tick, context).is_pending() {
                        return Poll::Pending;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

#[derive(Debug)]
struct StreamInner {
    socket: TcpStream,
    reactor: Arc<Reactor>,
    source: Arc<Source>,
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        self.reactor.deregister(self.socket.as_raw_fd(), &self.source);
    }
}

impl AsyncRead for &Stream {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        let inner = &*self.inner;
        let read = &inner.source.read;
        let tick = read.tick.load(Ordering::SeqCst);
        let drained = read.drained_at.load(Ordering::SeqCst) == tick && !read.ended.load(Ordering::SeqCst);
        if drained && inner.source.poll_changed(read, tick, context).is_pending() {
            return Poll::Pending;
        }
        inner.source.poll_io(read, context, || {
            let tick = read.tick.load(Ordering::SeqCst);
            let result = (&inner.socket).read(buffer);
            if matches!(result, Ok(count) if count > 0 && count < buffer.len()) {
                read.drained_at.store(tick, Ordering::SeqCst);
            }
            result
        })
    }
}

impl AsyncWrite for &Stream {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let inner = &*self.inner;
        inner.source.poll_io(&inner.source.write, context, || send(&inner.socket, bytes))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.inner.socket.shutdown(Shutdown::Write))
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self).poll_read(context, buffer)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self).poll_write(context, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_flush(context)
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_close(context)
    }
}

/// Registered sockets by token; freed tokens are reused.
#[derive(Debug, Default)]
struct Sources {
    slots: Vec<Option<Arc<Source>>>,
    free: Vec<usize>,
}

/// The buffer `epoll_pwait2` fills, the sources its events are for, and the timers that fell
/// due (kept between turns, so a turn allocates nothing).
struct Events {
    list: Vec<libc::epoll_event>,
    ready: Vec<(Arc<Source>, u32)>,
    due: Vec<Waker>,
}

impl Events {
    fn new() -> Events {
        Events {
            list: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_TURN_MAX],
            ready: Vec::with_capacity(EVENTS_PER_TURN_MAX),
            due: Vec::new(),
        }
    }
}

/// The waker of a [`block_on`]: marks the future woken, and wakes its reactor if it sleeps.
struct Notified {
    woken: AtomicBool,
    reactor: Arc<Reactor>,
}

impl Wake for Notified {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // `woken` before `sleeping`, the reverse of the reactor's order: one of the two sees
        // the other (both are sequentially consistent).
        if !self.woken.swap(true, Ordering::SeqCst) && self.reactor.sleeping.load(Ordering::SeqCst) {
            self.reactor.notify();
        }
    }
}

thread_local! {
    /// This thread's reactor, made by its first [`block_on`].
    static THREAD_REACTOR: Arc<Reactor> =
        Arc::new(Reactor::new().unwrap_or_else(|error| panic!("cannot create an epoll reactor: {error}")));
    /// The reactor of the [`block_on`] running on this thread, if one is.
    static CURRENT: std::cell::RefCell<Option<Arc<Reactor>>> = const { std::cell::RefCell::new(None) };
}

/// Puts back the reactor of an enclosing [`block_on`].
struct RestoreCurrent(Option<Arc<Reactor>>);

impl Drop for RestoreCurrent {
    fn drop(&mut self) {
        let previous = self.0.take();
        // The thread-local is gone only while the thread exits, when nothing polls any more.
        let _ = CURRENT.try_with(|current| current.replace(previous));
    }
}

/// The reactor for sockets and timers made outside any [`block_on`], driven by a thread of
/// its own.
fn shared_reactor() -> &'static Arc<Reactor> {
    static SHARED: OnceLock<Arc<Reactor>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let reactor =
            Arc::new(Reactor::new().unwrap_or_else(|error| panic!("cannot create an epoll reactor: {error}")));
        let driven = reactor.clone();
        std::thread::Builder::new()
            .name("loadgen-reactor".to_owned())
            .spawn(move || {
                let mut events = Events::new();
                let never = AtomicBool::new(false);
                loop {
                    driven.turn(&mut events, None, &never);
                }
            })
            .unwrap_or_else(|error| panic!("cannot start the shared reactor's thread: {error}"));
        reactor
    })
}

/// Waits in `epoll_pwait2` (nanosecond timeouts); `None` waits for an event however long.
/// Returns how many events were written to `list`.
fn wait_for_events(epoll: RawFd, list: &mut [libc::epoll_event], timeout: Option<Duration>) -> usize {
    let timespec = timeout.map(|timeout| libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    });
    let timeout_pointer = timespec.as_ref().map_or(std::ptr::null(), |timespec| timespec as *const libc::timespec);
    // SAFETY: `list` is valid for `list.len()` events and `timespec` outlives the call; no
    // signal mask is passed.
    let count = unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait2,
            epoll,
            list.as_mut_ptr(),
            list.len() as libc::c_int,
            timeout_pointer,
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        )
    };
    if count >= 0 {
        return count as usize;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EINTR) => 0,
        // Kernels before 5.11: millisecond timeouts, rounded up so a timer is never early.
        Some(libc::ENOSYS) => {
            let milliseconds = timeout.map_or(-1, |timeout| {
                let rounded = timeout.as_nanos().div_ceil(1_000_000);
                rounded.min(i32::MAX as u128) as libc::c_int
            });
            // SAFETY: as above.
            let count = unsafe { libc::epoll_wait(epoll, list.as_mut_ptr(), list.len() as libc::c_int, milliseconds) };
            count.max(0) as usize
        }
        other => panic!("epoll_pwait2 failed: {:?}", other.map(io::Error::from_raw_os_error)),
    }
}

/// A non-blocking socket with a connect to `address` begun.
fn start_connect(address: SocketAddr) -> io::Result<TcpStream> {
    let domain = if address.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: a plain system call; the descriptor is checked before it is owned.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let socket = unsafe { TcpStream::from_raw_fd(fd) };
    let result = match address {
        SocketAddr::V4(address) => {
            let raw = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: address.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(address.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: `raw` is a complete sockaddr_in that outlives the call.
            unsafe {
                libc::connect(
                    fd,
                    (&raw as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(address) => {
            let raw = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: address.port().to_be(),
                sin6_flowinfo: address.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: address.ip().octets() },
                sin6_scope_id: address.scope_id(),
            };
            // SAFETY: `raw` is a complete sockaddr_in6 that outlives the call.
            unsafe {
                libc::connect(
                    fd,
                    (&raw as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(error);
        }
    }
    Ok(socket)
}

/// Whether the socket takes writes now (a connect in progress has finished).
fn writable_now(fd: RawFd) -> bool {
    let mut poll = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one live pollfd, no wait.
    let count = unsafe { libc::poll(&mut poll, 1, 0) };
    count > 0 && poll.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

/// A write that never raises SIGPIPE on a socket the peer closed.
fn send(socket: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for its length for the duration of the call.
    let sent = unsafe {
        libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::io::Write;

    // Bytes written on one end arrive on the other, in both directions, with the reader
    // waiting for them (the edge-triggered wake-up path) rather than finding them there.
    #[test]
    fn a_connection_carries_bytes_both_ways_through_the_reactor() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let echo = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut buffer = [0u8; 5];
            socket.read_exact(&mut buffer).expect("read");
            std::thread::sleep(Duration::from_millis(20));
            socket.write_all(&buffer).expect("write");
            socket.write_all(b" and more").expect("write");
        });
        let received = block_on(async {
            let stream = Stream::connect(address).await.expect("connect");
            (&stream).write_all(b"hello").await.expect("write");
            let mut received = Vec::new();
            let read = within(Duration::from_secs(5), (&stream).read_to_end(&mut received)).await;
            read.expect("the stream ends within 5 s").expect("read");
            received
        });
        echo.join().expect("echo thread");
        assert_eq!(received, b"hello and more");
    }

    // Bytes and the peer's close that arrive before the first read come as one edge: the short
    // read that takes the bytes must not wait for another edge before it sees the end.
    #[test]
    fn the_end_of_the_stream_is_seen_after_a_short_read() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let peer = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            socket.write_all(b"last words").expect("write");
        });
        let reads = block_on(async {
            let stream = Stream::connect(address).await.expect("connect");
            peer.join().expect("peer thread");
            sleep(Duration::from_millis(50)).await;
            let mut buffer = [0u8; 64];
            let first = (&stream).read(&mut buffer).await.expect("read");
            let second = within(Duration::from_secs(5), (&stream).read(&mut buffer)).await;
            (first, second.map(|read| read.expect("read")))
        });
        assert_eq!(reads, (10, Some(0)), "the second read must see the end of the stream");
    }

    // A refused connect fails with the kernel's error instead of hanging.
    #[test]
    fn a_refused_connect_is_an_error() {
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address")
        };
        let result = block_on(within(Duration::from_secs(5), Stream::connect(address)));
        let error = result.expect("the connect ends within 5 s").expect_err("nothing listens there");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }

    // Timers fire in deadline order and never early, and a dropped timer never fires.
    #[test]
    fn timers_fire_in_order_and_not_before_their_deadline() {
        let started = Instant::now();
        let order = block_on(async {
            let fired = Arc::new(Mutex::new(Vec::new()));
            let record = |label: u32, after_ms: u64| {
                let fired = fired.clone();
                async move {
                    sleep(Duration::from_millis(after_ms)).await;
                    assert!(started.elapsed() >= Duration::from_millis(after_ms), "timer {label} fired early");
                    lock(&fired).push(label);
                }
            };
            let dropped = within(Duration::from_millis(5), sleep(Duration::from_secs(60))).await;
            assert!(dropped.is_none());
            futures_lite::future::zip(record(2, 30), futures_lite::future::zip(record(1, 10), record(3, 50))).await;
            let order = lock(&fired).clone();
            order
        });
        assert_eq!(order, vec![1, 2, 3]);
    }

    // A task woken from another thread while the reactor sleeps with no timer is woken through
    // the eventfd, not left asleep.
    #[test]
    fn a_wake_from_another_thread_reaches_a_sleeping_reactor() {
        let (sender, receiver) = flume::bounded::<u32>(1);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sender.send(7).expect("send");
        });
        let value = block_on(receiver.recv_async()).expect("a value");
        thread.join().expect("thread");
        assert_eq!(value, 7);
    }
}
