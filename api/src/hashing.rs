//! Argon2id hashing on `HASH_CONCURRENCY` dedicated threads, each reusing one block of memory,
//! with a fair share of the hashing slots per client.
//!
//! Hashing is deliberately expensive CPU work. Running it on the async workers would stall
//! every other request, and running unboundedly many at once would let a burst of logins eat
//! all cores and memory; a semaphore admits `HASH_CONCURRENCY` hashes at a time.
//!
//! Each hash needs `ARGON2_MEMORY_KIB` of working memory (19 MiB by default). Allocating it
//! per hash, as `PasswordHasher::hash_password` does, let glibc keep the freed blocks in one
//! arena per thread that had hashed: a flood of sign-ups, sign-ins and resets took the api
//! from 21 MiB to 657 MiB resident. Here each of `HASH_CONCURRENCY` threads owns one buffer,
//! allocated when it gets work and reused for every hash after, so hashing holds at most
//! `HASH_CONCURRENCY × ARGON2_MEMORY_KIB` whatever the traffic; a thread that has had nothing
//! to do for `MEMORY_IDLE_RELEASE` gives its buffer back. The PHC strings are built and
//! checked by hand, byte for byte what `hash_password` wrote before, so stored hashes verify.
//!
//! A stored hash may need more memory than that buffer: an argon2 hash made with a larger
//! `ARGON2_MEMORY_KIB`, or an imported one (argon2-cffi's 64 MiB, Django's 100 MiB, Werkzeug's
//! 32 MiB scrypt). It is counted against the same bound: its verification takes one slot per
//! `ARGON2_MEMORY_KIB` it needs (all of them at most), its thread gives its own buffer back
//! for the temporary one, and each thread of the other slots it took gives its buffer back
//! and waits with it, so every thread holds at most its slots' share. Only one hash larger
//! than the whole bound (within the caps, and the import's time budget) exceeds it, alone.
//!
//! The shared queue alone is first come, first served: one client sending a hundred sign-ins
//! at once would put everyone else behind its hundred hashes. So each client (an IPv4 address,
//! or an IPv6 /64, as for the rate limits) may have only `per_client` hashes queued or running;
//! its further requests wait behind its own, and everyone waits at most `HASH_QUEUE_TIMEOUT`.

use std::{
    collections::HashMap,
    net::IpAddr,
    panic::AssertUnwindSafe,
    sync::{
        Arc, LazyLock, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::Context as _;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{config::Argon2Params, error::ApiError, rate_limit::ip_subject};

/// Longest a request waits for a free hashing slot (its client's turn included).
const HASH_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Salt and output lengths of `PasswordHasher::hash_password` (the PHC recommendation and
/// argon2's default), kept so new hashes look exactly like the ones already stored.
const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

/// The most memory a stored hash may ask for at verification. A hash written under a larger
/// `ARGON2_MEMORY_KIB` than today's gets a temporary buffer for that one call (see
/// [`Memory::compute`]); beyond this it is refused, so a bad row cannot make each sign-in
/// attempt allocate gigabytes.
const MAX_STORED_MEMORY_KIB: u32 = 256 * 1024;
/// The most passes a stored hash may ask for (the ceiling of `ARGON2_ITERATIONS`), for the
/// same reason: one row must not pin a hashing thread for minutes.
const MAX_STORED_ITERATIONS: u32 = 100;

/// Hashes queued or running per client unless [`Hasher::with_per_client`] says otherwise.
const DEFAULT_PER_CLIENT: usize = 1;

/// A hashing thread idle this long frees its buffer: memory is held through a burst, not for
/// the rest of the process's life after one.
const MEMORY_IDLE_RELEASE: Duration = Duration::from_secs(5);

/// Capacity every argon2 buffer is reserved with, at least: above glibc's 32 MiB ceiling for
/// its dynamic mmap threshold. An allocation that size is always a mapping of its own, so
/// freeing it returns the memory to the system at once and does not raise the threshold
/// (freeing a 19 MiB mapping would, and every later buffer would then come from an arena
/// that keeps it: the original leak). Only the blocks argon2 writes become resident; the rest
/// of the reservation is address space.
const RESERVED_BLOCKS: usize = 32 * 1024 + 1;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// The hashing threads; they end when the last clone of the hasher is dropped.
    threads: Arc<Threads>,
    slots: Arc<Semaphore>,
    clients: Arc<Clients>,
    queue_timeout: Duration,
    /// A real hash of a random password with the configured parameters, verified against when
    /// the account does not exist, so "unknown address" costs the same as "wrong password".
    dummy_hash: Arc<str>,
    verifications: Arc<AtomicU64>,
}

impl Hasher {
    /// Starts `concurrency` hashing threads and makes the dummy hash (one hash at start).
    pub fn new(p: Argon2Params, concurrency: usize) -> anyhow::Result<Self> {
        Self::build(p, concurrency, MEMORY_IDLE_RELEASE)
    }

    fn build(p: Argon2Params, concurrency: usize, idle_release: Duration) -> anyhow::Result<Self> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let concurrency = concurrency.max(1);
        let random = uuid::Uuid::new_v4().to_string();
        // Hashed on this thread with a buffer that is freed at once, not on a hashing thread:
        // the idle api then holds no hashing memory until the first request needs it.
        let dummy = hash_with(&mut Memory::new(&params), &params, random.as_bytes())?;
        Ok(Self {
            threads: Arc::new(Threads::start(concurrency, &params, idle_release)?),
            params,
            slots: Arc::new(Semaphore::new(concurrency)),
            clients: Arc::new(Clients::new(DEFAULT_PER_CLIENT)),
            queue_timeout: HASH_QUEUE_TIMEOUT,
            dummy_hash: dummy.into(),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Lets each client have `n` hashes queued or running at once (default 1).
    #[must_use]
    pub fn with_per_client(mut self, n: usize) -> Self {
        self.clients = Arc::new(Clients::new(n.max(1)));
        self
    }

    /// Hashes `password` into a PHC string, in `client`'s turn.
    pub async fn hash_for(&self, client: IpAddr, password: String) -> Result<String, ApiError> {
        let params = self.params.clone();
        self.run(client, move |memory| {
            hash_with(memory, &params, password.as_bytes())
        })
        .await
    }

    /// Verifies `password` against `stored` in `client`'s turn, or against the dummy hash when
    /// there is no account, so both cases do the same work. Always `false` without an account.
    pub async fn verify_for(
        &self,
        client: IpAddr,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, ApiError> {
        let exists = stored.is_some();
        let dummy = self.dummy_hash.clone();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let slots = self.slots_for(&hash);
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let ok = self
            .run_with(client, slots, move |memory| {
                match verify_with(memory, password.as_bytes(), &hash) {
                    Ok(ok) => Ok(ok),
                    // An unusable stored hash (a corrupt row, parameters over the caps) must
                    // not answer differently from a wrong password, nor with a 500 that input
                    // can provoke: logged for operators, the dummy's work done, refused.
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"),
                            "stored password hash unusable; treated as a wrong password");
                        verify_with(memory, password.as_bytes(), &dummy).map(|_| false)
                    }
                }
            })
            .await?;
        Ok(exists && ok)
    }

    /// Whether `stored` was made with other parameters than the configured ones (algorithm,
    /// version, memory, passes, lanes or output length), so a successful sign-in should store
    /// a new hash of the password. An unreadable hash needs one too.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        let Ok(stored_params) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm.as_str() != Algorithm::Argon2id.as_str()
            || parsed.version != Some(Version::V0x13.into())
            || stored_params.m_cost() != self.params.m_cost()
            || stored_params.t_cost() != self.params.t_cost()
            || stored_params.p_cost() != self.params.p_cost()
            || stored_params.output_len() != Some(OUTPUT_LEN)
            || !stored_params.keyid().is_empty()
            || !stored_params.data().is_empty()
    }

    /// How long one verification of `stored` takes on a hashing thread, in `client`'s turn
    /// like any other (the wait for the turn and the slot not counted): what a sign-in against
    /// such a hash costs here. Meant for the [`synthetic`] hash of a signature.
    pub async fn time_verify(&self, client: IpAddr, stored: String) -> Result<Duration, ApiError> {
        let slots = self.slots_for(&stored);
        self.run_with(client, slots, move |memory| {
            let started = std::time::Instant::now();
            verify_with(memory, b"a password that is not it", &stored)?;
            Ok(started.elapsed())
        })
        .await
    }

    /// The hashing slots a verification of `stored` takes: one per `ARGON2_MEMORY_KIB` of
    /// working memory it needs, at least one, at most all (see the module's documentation).
    fn slots_for(&self, stored: &str) -> u32 {
        let per_slot = u64::from(self.params.m_cost()).max(1);
        let slots = memory_kib(stored).div_ceil(per_slot);
        let all = u32::try_from(self.threads.queues.len()).unwrap_or(u32::MAX);
        u32::try_from(slots)
            .unwrap_or(u32::MAX)
            .clamp(1, all.max(1))
    }

    /// How many verifications ran since start (the dummy ones included).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// How many times since start a hashing thread freed its buffer after
    /// `MEMORY_IDLE_RELEASE` without work.
    pub fn memory_releases(&self) -> u64 {
        self.threads.releases.load(Ordering::Relaxed)
    }

    /// Waits for `client`'s turn and a free slot, then runs `work` on a hashing thread.
    async fn run<T: Send + 'static>(
        &self,
        client: IpAddr,
        work: impl FnOnce(&mut Memory) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.run_with(client, 1, work).await
    }

    /// [`Self::run`] for work that takes `slots` slots (its memory, see [`Self::slots_for`]).
    async fn run_with<T: Send + 'static>(
        &self,
        client: IpAddr,
        slots: u32,
        work: impl FnOnce(&mut Memory) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let admission = self.admit(client, slots).await?;
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |memory| {
            // The request was dropped while it waited (the client hung up): nobody would
            // read the answer, so the slot goes to the next request at once.
            if reply.is_closed() {
                return Box::new(|| ());
            }
            let result = work(memory);
            Box::new(move || {
                let _ = reply.send(result);
            })
        });
        // No await between the admission and the hand-over: the slot and the thread go
        // together. The thread frees the slot when the work is done, whether or not the
        // caller still waits (cancelled callers cannot get more than `concurrency` hashes
        // running), and before it answers (a caller told "done" no longer holds a slot).
        self.threads.dispatch(Job { work, admission })?;
        answer
            .await
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("a hashing job panicked")))?
            .map_err(ApiError::Internal)
    }

    /// Takes the client's turn, then `slots` hashing slots, within the queue timeout.
    async fn admit(&self, client: IpAddr, slots: u32) -> Result<Admission, ApiError> {
        let closed = |e: tokio::sync::AcquireError| ApiError::Internal(e.into());
        // Counted as waiting until admitted, timed out or abandoned (the guard drops with
        // this future whichever way it ends).
        let _waiting = GaugeGuard::enter(&QUEUE_DEPTH);
        let wait = async {
            let ticket = self.clients.enter(ip_subject(client));
            let turn = ticket.turns.clone().acquire_owned().await.map_err(closed)?;
            // The semaphore is fair: a request for several slots is not overtaken by later
            // requests for one, it gets the next slots that free up.
            let slot = (self.slots.clone().acquire_many_owned(slots).await).map_err(closed)?;
            Ok(Admission {
                _slot: slot,
                _turn: Some(turn),
                _ticket: Some(ticket),
                _running: Some(GaugeGuard::enter(&IN_PROGRESS)),
            })
        };
        // A burst beyond what the cores can hash waits at most this long, then gets a 503:
        // a bounded queue instead of requests piling up for minutes.
        tokio::time::timeout(self.queue_timeout, wait)
            .await
            .map_err(|_| ApiError::unavailable(anyhow::anyhow!("password hashing is saturated")))?
    }
}

/// A hashing slot and the client's turn, held until the hashing thread is done (a thread
/// that only holds memory for another's job has a slot and no turn).
///
/// Fields drop in order: the slot goes back first, so a request of another client already
/// waiting for a slot gets it before this client's next request can even ask for one.
struct Admission {
    _slot: OwnedSemaphorePermit,
    _turn: Option<OwnedSemaphorePermit>,
    _ticket: Option<ClientTicket>,
    /// Counted in `hashing_in_progress` (a hash of its own: not a slot held for another's).
    _running: Option<GaugeGuard>,
}

/// Requests waiting for their client's turn or a hashing slot, over every hasher of the
/// process (`pwrecovery_hashing_queue_depth`): a queue that stays above zero means the
/// hashing threads are saturated and requests approach `HASH_QUEUE_TIMEOUT` (then 503).
static QUEUE_DEPTH: LazyLock<metrics::Gauge> =
    LazyLock::new(|| metrics::gauge!("hashing_queue_depth"));
/// Hashes admitted and not yet done (`pwrecovery_hashing_in_progress`): at most
/// `HASH_CONCURRENCY` per api.
static IN_PROGRESS: LazyLock<metrics::Gauge> =
    LazyLock::new(|| metrics::gauge!("hashing_in_progress"));

/// One unit of a gauge for as long as it lives.
struct GaugeGuard(&'static LazyLock<metrics::Gauge>);

impl GaugeGuard {
    fn enter(gauge: &'static LazyLock<metrics::Gauge>) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Makes both hashing gauges exist (at 0) before the first request.
pub fn register_metrics() {
    QUEUE_DEPTH.increment(0.0);
    IN_PROGRESS.increment(0.0);
}

/// The clients with hashes queued or running, each with its own turns.
struct Clients {
    per_client: usize,
    /// Only clients with something in flight are here (a ticket removes its client when it
    /// was the last), so the map is no larger than the number of waiting requests.
    map: Mutex<HashMap<String, ClientEntry>>,
}

struct ClientEntry {
    turns: Arc<Semaphore>,
    tickets: usize,
}

impl Clients {
    fn new(per_client: usize) -> Self {
        Self {
            per_client,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn enter(self: &Arc<Self>, subject: String) -> ClientTicket {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(subject.clone()).or_insert_with(|| ClientEntry {
            turns: Arc::new(Semaphore::new(self.per_client)),
            tickets: 0,
        });
        entry.tickets += 1;
        ClientTicket {
            clients: self.clone(),
            turns: entry.turns.clone(),
            subject,
        }
    }

    #[cfg(test)]
    fn in_flight(&self, subject: &str) -> usize {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(subject).map_or(0, |e| e.tickets)
    }
}

/// One request of a client, from its arrival until its hash is done (or it gave up).
struct ClientTicket {
    clients: Arc<Clients>,
    turns: Arc<Semaphore>,
    subject: String,
}

impl Drop for ClientTicket {
    fn drop(&mut self) {
        let mut map = self
            .clients
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(&self.subject) {
            entry.tickets = entry.tickets.saturating_sub(1);
            if entry.tickets == 0 {
                map.remove(&self.subject);
            }
        }
    }
}

/// Work for a hashing thread, given that thread's memory. It returns the delivery of its
/// answer, which the thread makes once it has freed the slot.
type Work = Box<dyn FnOnce(&mut Memory) -> Answer + Send>;
type Answer = Box<dyn FnOnce() + Send>;

/// Work and the slot it was admitted with; the thread frees the slot when the work is done.
struct Job {
    work: Work,
    admission: Admission,
}

/// `concurrency` threads, each with its own queue and [`Memory`], and the list of those with
/// nothing to do. One queue per thread (rather than one shared) lets each idle thread time out
/// on its own and free its memory.
struct Threads {
    queues: Vec<mpsc::Sender<Job>>,
    /// How many times a thread freed its buffer for being idle.
    releases: Arc<AtomicU64>,
    /// Idle threads, the most recently busy last. That one is taken first, so under light
    /// load one thread does the work with its buffer in place and the others release theirs.
    idle: Arc<Mutex<Vec<usize>>>,
}

impl Threads {
    fn start(n: usize, params: &Params, idle_release: Duration) -> anyhow::Result<Self> {
        let idle = Arc::new(Mutex::new((0..n).collect::<Vec<_>>()));
        let releases = Arc::new(AtomicU64::new(0));
        let mut queues = Vec::with_capacity(n);
        for index in 0..n {
            let (queue, jobs) = mpsc::channel::<Job>();
            queues.push(queue);
            let thread = HashingThread {
                index,
                jobs,
                idle: idle.clone(),
                releases: releases.clone(),
                memory: Memory::new(params),
                idle_release,
            };
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || thread.serve())
                .context("starting a hashing thread")?;
        }
        Ok(Self {
            queues,
            releases,
            idle,
        })
    }

    /// Hands `job` to an idle thread; a job admitted with several slots also takes a thread
    /// per extra slot, which gives its buffer back and waits until the job is done.
    fn dispatch(&self, mut job: Job) -> Result<(), ApiError> {
        let gone = || ApiError::Internal(anyhow::anyhow!("the hashing threads are gone"));
        let slots = job.admission._slot.num_permits();
        // The slot semaphore admits no more slots than there are threads, each thread holds
        // one slot while it works, and a thread is back on the list before its slot is freed:
        // an admitted job always finds a thread here per slot.
        let threads = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let from = idle.len().checked_sub(slots).ok_or_else(gone)?;
            idle.split_off(from)
        };
        let Some((&worker, holders)) = threads.split_last() else {
            return Err(gone());
        };
        let mut done = Vec::with_capacity(holders.len());
        for &thread in holders {
            let slot = job.admission._slot.split(1).ok_or_else(gone)?;
            let (finished, wait) = mpsc::channel::<()>();
            done.push(finished);
            let hold: Work = Box::new(move |memory| {
                // This thread's share of the memory bound is the job's now.
                memory.release();
                // Returns when the job's work is over (its sender is dropped).
                let _ = wait.recv();
                Box::new(|| ())
            });
            let admission = Admission {
                _slot: slot,
                _turn: None,
                _ticket: None,
                _running: None,
            };
            let hold = Job {
                work: hold,
                admission,
            };
            self.queues[thread].send(hold).map_err(|_| gone())?;
        }
        let work = job.work;
        job.work = Box::new(move |memory| {
            let answer = work(memory);
            drop(done);
            answer
        });
        self.queues[worker].send(job).map_err(|_| gone())
    }
}

/// The nice value of the hashing threads. A hash is 20 ms of CPU, every other request well
/// under a millisecond: while hashing keeps the cores busy, the scheduler gives the runtime's
/// threads (and the processes beside the api) the cores first, so a flood of sign-ins or
/// resets does not hold up forgot-password answers. Hashing still gets every cycle nothing
/// else wants, and at least about a tenth of a core each while something else runs.
const HASHING_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`HASHING_NICE`] (on Linux a thread
/// has its own nice value). Only lowering is asked for, which needs no privilege; where it
/// fails the thread keeps the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHING_NICE)
    {
        tracing::warn!(error = %e, "could not lower the hashing threads' priority");
    }
}

/// One hashing thread: its queue, its memory, and its place on the idle list.
struct HashingThread {
    index: usize,
    jobs: mpsc::Receiver<Job>,
    idle: Arc<Mutex<Vec<usize>>>,
    releases: Arc<AtomicU64>,
    memory: Memory,
    idle_release: Duration,
}

impl HashingThread {
    /// Runs jobs until every `Hasher` is gone; frees the buffer after `idle_release` without.
    fn serve(mut self) {
        lower_priority();
        loop {
            let next = if self.memory.is_held() {
                self.jobs.recv_timeout(self.idle_release)
            } else {
                self.jobs
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            };
            match next {
                Ok(job) => self.run(job),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.memory.release();
                    self.releases.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn run(&mut self, Job { work, admission }: Job) {
        // A panicking job loses its answer (the caller gets an error), not the thread.
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut self.memory))).ok();
        // Back on the idle list before the slot is freed, so the next admitted job always
        // finds a thread; the slot freed before the answer goes out.
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
        drop(admission);
        if let Some(answer) = answer {
            answer();
        }
    }
}

/// One hashing thread's argon2 working memory: a buffer for the configured parameters,
/// allocated when work comes and reused by every hash of that thread until it is released.
struct Memory {
    configured_blocks: usize,
    blocks: Vec<Block>,
}

impl Memory {
    fn new(params: &Params) -> Self {
        Self {
            configured_blocks: params.block_count(),
            blocks: Vec::new(),
        }
    }

    /// Memory without a buffer of its own: every hash gets a temporary one (a verification
    /// timed away from the hashing threads, see [`time_verify_here`]).
    fn none() -> Self {
        Self {
            configured_blocks: 0,
            blocks: Vec::new(),
        }
    }

    fn is_held(&self) -> bool {
        self.blocks.capacity() > 0
    }

    fn release(&mut self) {
        self.blocks = Vec::new();
    }

    /// Runs `argon` over the thread's buffer. A stored hash that needs more memory than the
    /// configured parameters (written before `ARGON2_MEMORY_KIB` was lowered, or imported)
    /// gets a temporary buffer for this call instead of a larger permanent one: such hashes
    /// are replaced at their next sign-in (`needs_rehash`), and growing the buffer would keep
    /// the old, larger cost resident in every thread. The thread's own buffer is given back
    /// first: the job took the slots of the memory it needs (see [`Hasher::slots_for`]).
    fn compute(
        &mut self,
        argon: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> anyhow::Result<()> {
        let needed = argon.params().block_count();
        let result = if needed <= self.configured_blocks {
            if !self.is_held() {
                self.blocks = allocate(self.configured_blocks);
            }
            // Reuse is safe: argon2 writes every block in its first pass before reading it.
            argon.hash_password_into_with_memory(password, salt, out, &mut self.blocks[..needed])
        } else {
            self.release();
            argon.hash_password_into_with_memory(password, salt, out, allocate(needed))
        };
        result.map_err(|e| anyhow::anyhow!("argon2 failed: {e}"))
    }
}

/// `n` blocks in an allocation of at least [`RESERVED_BLOCKS`].
fn allocate(n: usize) -> Vec<Block> {
    let mut blocks = Vec::with_capacity(n.max(RESERVED_BLOCKS));
    blocks.resize(n, Block::new());
    blocks
}

/// Hashes `password` with a fresh salt into the PHC string `PasswordHasher::hash_password`
/// makes: `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`, unpadded standard base64.
fn hash_with(memory: &mut Memory, params: &Params, password: &[u8]) -> anyhow::Result<String> {
    let salt: [u8; SALT_LEN] = argon2::password_hash::try_generate_salt()
        .map_err(|e| anyhow::anyhow!("no randomness for a salt: {e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; OUTPUT_LEN];
    memory.compute(&argon, password, &salt, &mut out)?;
    Ok(format!(
        "${}$v={}$m={},t={},p={}${}${}",
        Algorithm::Argon2id.as_str(),
        u32::from(Version::V0x13),
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out),
    ))
}

/// Verifies `password` against `stored`: an argon2 PHC string here (Django's `argon2$` form
/// too), any other format an imported account may hold by [`crate::foreign_hash`].
fn verify_with(memory: &mut Memory, password: &[u8], stored: &str) -> anyhow::Result<bool> {
    use crate::foreign_hash::{Foreign, Kind};
    match Kind::of(stored) {
        Kind::Argon2 | Kind::DjangoArgon2 => verify_argon2(memory, password, stored),
        Kind::Other => {
            let foreign = Foreign::parse(stored)?;
            // scrypt allocates its own work area: the thread's buffer goes back first, as
            // for a larger argon2 hash (the job took the slots of what it needs).
            if foreign.memory_bytes() > 0 {
                memory.release();
            }
            Ok(foreign.verify(password))
        }
    }
}

/// The working memory a verification of `stored` needs, in KiB (0 for a hash that cannot be
/// read: the dummy hash is verified instead, within the configured memory).
fn memory_kib(stored: &str) -> u64 {
    use crate::foreign_hash::{Foreign, Kind};
    match Kind::of(stored) {
        Kind::Argon2 | Kind::DjangoArgon2 => {
            read_argon2(stored).map_or(0, |a| u64::from(a.argon.params().m_cost()))
        }
        Kind::Other => Foreign::parse(stored).map_or(0, |f| f.memory_bytes().div_ceil(1024)),
    }
}

/// The parameters what verifying `stored` costs depends on, without its salt or output
/// (`argon2id:19:65536:3:4`: variant, version, memory in KiB, passes, lanes; the others in
/// [`crate::foreign_hash::Foreign::signature`]). Refused like [`usable`] refuses.
pub fn signature(stored: &str) -> anyhow::Result<String> {
    use crate::foreign_hash::{Foreign, Kind};
    match Kind::of(stored) {
        Kind::Argon2 | Kind::DjangoArgon2 => {
            let StoredArgon2 {
                argon,
                algorithm,
                version,
                ..
            } = read_argon2(stored)?;
            let params = argon.params();
            Ok(format!(
                "{}:{}:{}:{}:{}",
                algorithm.as_str(),
                u32::from(version),
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            ))
        }
        Kind::Other => Ok(Foreign::parse(stored)?.signature()),
    }
}

/// A hash with the parameters `signature` names (see [`signature`]), a random salt and an
/// all-zero output: its verification costs what a stored hash of that signature costs, and
/// no password verifies against it. Checked against the caps like a stored hash.
pub fn synthetic(signature: &str) -> anyhow::Result<String> {
    if !signature.starts_with("argon2") {
        return Ok(crate::foreign_hash::synthetic(signature)?);
    }
    let mut parts = signature.split(':');
    let algorithm = parts.next().unwrap_or_default();
    let numbers: Vec<u32> = parts
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("malformed signature"))?;
    let [version, m, t, p] = numbers[..] else {
        anyhow::bail!("malformed signature");
    };
    let salt: [u8; SALT_LEN] = rand::random();
    let hash = format!(
        "${algorithm}$v={version}$m={m},t={t},p={p}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode([0u8; OUTPUT_LEN]),
    );
    read_argon2(&hash)?;
    Ok(hash)
}

/// How long one verification of `stored` takes on the calling thread, with memory of its own
/// (allocated for the call, as for a hash larger than the hashing threads' buffers): for a
/// caller without a [`Hasher`], on a thread that may block (an import, timing a signature's
/// [`synthetic`] hash).
pub fn time_verify_here(stored: &str) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    verify_with(&mut Memory::none(), b"a password that is not it", stored)?;
    Ok(started.elapsed())
}

/// Whether a sign-in could verify against `stored` (its format is read and its parameters
/// are within the caps), without computing anything (what [`signature`] checks too).
pub fn usable(stored: &str) -> anyhow::Result<()> {
    use crate::foreign_hash::{Foreign, Kind};
    match Kind::of(stored) {
        Kind::Argon2 | Kind::DjangoArgon2 => read_argon2(stored).map(drop),
        Kind::Other => Foreign::parse(stored).map(drop).map_err(Into::into),
    }
}

/// A stored argon2 hash, read and checked against the caps.
struct StoredArgon2 {
    argon: Argon2<'static>,
    algorithm: Algorithm,
    version: Version,
    salt: Vec<u8>,
    expected: Vec<u8>,
}

/// Reads an argon2 PHC string (any variant, version and parameters within the caps; Django's
/// `argon2$…` form too).
fn read_argon2(stored: &str) -> anyhow::Result<StoredArgon2> {
    let stored = crate::foreign_hash::django_argon2(stored).unwrap_or(stored);
    let unreadable = |e: &dyn std::fmt::Display| anyhow::anyhow!("stored hash unreadable: {e}");
    let parsed = PasswordHash::new(stored).map_err(|e| unreadable(&e))?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| unreadable(&e))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| unreadable(&e))?,
        // What libargon2 reads a string without `v=` as: such strings come from before
        // version 1.3 wrote `v=19` (argon2-cffi, PHP, the reference `argon2` tool), and were
        // computed as version 0x10. (`PasswordVerifier` assumed 0x13: none of them verified.)
        None => Version::V0x10,
    };
    let params = Params::try_from(&parsed).map_err(|e| unreadable(&e))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        anyhow::bail!("stored hash has no salt or no output");
    };
    anyhow::ensure!(
        params.m_cost() <= MAX_STORED_MEMORY_KIB && params.t_cost() <= MAX_STORED_ITERATIONS,
        "stored hash asks for m={} t={}, over the verification caps",
        params.m_cost(),
        params.t_cost()
    );
    Ok(StoredArgon2 {
        argon: Argon2::new(algorithm, version, params),
        algorithm,
        version,
        salt: salt.as_ref().to_vec(),
        expected: expected.as_bytes().to_vec(),
    })
}

/// Recomputes `stored` (see [`read_argon2`]) for `password` and compares the outputs in
/// constant time.
fn verify_argon2(memory: &mut Memory, password: &[u8], stored: &str) -> anyhow::Result<bool> {
    let StoredArgon2 {
        argon,
        salt,
        expected,
        ..
    } = read_argon2(stored)?;
    let mut buffer = [0u8; argon2::password_hash::phc::Output::MAX_LENGTH];
    let out = &mut buffer[..expected.len()];
    memory.compute(&argon, password, &salt, out)?;
    // Constant time, so the response time says nothing about how much of the output matched.
    Ok(out.ct_eq(&expected).into())
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    fn params(memory_kib: u32, iterations: u32) -> Argon2Params {
        Argon2Params {
            memory_kib,
            iterations,
            parallelism: 1,
        }
    }

    fn cheap() -> Hasher {
        Hasher::new(params(64, 1), 2).expect("hasher")
    }

    fn old_hasher(p: Argon2Params) -> Argon2<'static> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None).expect("params");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// The client of the tests that are not about clients.
    const ME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// The nice value of every thread of this process named `name`, from `/proc`.
    #[cfg(target_os = "linux")]
    fn nice_of_threads(name: &str) -> Vec<i64> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
        tasks
            .filter_map(|task| {
                let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
                // `pid (comm) state ...`: the name is in parentheses, nice is field 19.
                let (head, rest) = stat.rsplit_once(") ")?;
                let comm = head.split_once(" (")?.1;
                (comm == name).then(|| rest.split(' ').nth(16)?.parse().ok())?
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_at_a_lower_priority_than_the_runtime() {
        let h = Hasher::new(params(64, 1), 1).expect("hasher");
        h.hash_for(ME, "correct horse".into()).await.expect("hash");
        // Other tests' hashers may run threads of the same name; each is lowered too.
        let nice = nice_of_threads("argon2-0");
        assert!(!nice.is_empty(), "no hashing thread found");
        assert!(
            nice.iter().all(|&n| n == i64::from(HASHING_NICE)),
            "{nice:?}"
        );
        let runtime = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let nice: i64 = runtime
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(16)?.parse().ok())
            .expect("nice field");
        assert!(
            nice < i64::from(HASHING_NICE),
            "the runtime thread runs at {nice}"
        );
        drop(h);
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let h = cheap();
        let stored = h.hash_for(ME, "correct horse".into()).await.expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(
            h.verify_for(ME, "correct horse".into(), Some(stored.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !h.verify_for(ME, "wrong horse".into(), Some(stored))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn a_missing_account_still_costs_one_verification() {
        let h = cheap();
        let before = h.verifications();
        assert!(
            !h.verify_for(ME, "anything".into(), None)
                .await
                .expect("verify")
        );
        assert_eq!(h.verifications(), before + 1);
    }

    #[tokio::test]
    async fn hashes_of_the_old_password_hasher_verify_on_the_reused_buffers() {
        let config = params(256, 2);
        // One thread, so every verification below runs in the same, reused buffer.
        let h = Hasher::new(config, 1).expect("hasher");
        for i in 0..4 {
            let password = format!("password number {i}");
            let old = old_hasher(config)
                .hash_password(password.as_bytes())
                .expect("old hash")
                .to_string();
            assert!(!h.needs_rehash(&old), "{old}");
            assert!(
                h.verify_for(ME, password.clone(), Some(old.clone()))
                    .await
                    .expect("verify")
            );
            assert!(
                !h.verify_for(ME, format!("{password}!"), Some(old))
                    .await
                    .expect("verify")
            );
        }
    }

    #[tokio::test]
    async fn hashes_made_on_the_reused_buffers_verify_with_the_old_password_verifier() {
        let config = params(256, 2);
        let h = Hasher::new(config, 1).expect("hasher");
        for i in 0..4 {
            let password = format!("password number {i}");
            let new = h.hash_for(ME, password.clone()).await.expect("hash");
            let parsed = PasswordHash::new(&new).expect("a PHC string");
            assert!(
                old_hasher(config)
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            );
            assert!(
                old_hasher(config)
                    .verify_password(b"another password", &parsed)
                    .is_err()
            );
        }
    }

    #[tokio::test]
    async fn a_new_hash_is_laid_out_exactly_like_an_old_one() {
        let config = params(64, 1);
        let h = Hasher::new(config, 1).expect("hasher");
        let new = h.hash_for(ME, "same layout".into()).await.expect("hash");
        let old = old_hasher(config)
            .hash_password(b"same layout")
            .expect("old hash")
            .to_string();
        let shape = |s: &str| -> Vec<usize> { s.split('$').map(str::len).collect() };
        assert_eq!(shape(&new), shape(&old));
        assert_eq!(new.rsplitn(3, '$').nth(2), old.rsplitn(3, '$').nth(2));
        // Re-serialising through the PHC parser gives the very same string.
        assert_eq!(PasswordHash::new(&new).expect("parse").to_string(), new);
    }

    #[tokio::test]
    async fn a_stored_hash_larger_than_the_buffer_verifies_and_asks_for_a_rehash() {
        let h = Hasher::new(params(64, 1), 1).expect("hasher");
        let larger = old_hasher(params(512, 1))
            .hash_password(b"from a costlier era")
            .expect("old hash")
            .to_string();
        assert!(h.needs_rehash(&larger));
        assert!(
            h.verify_for(ME, "from a costlier era".into(), Some(larger.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !h.verify_for(ME, "nope".into(), Some(larger))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn an_unusable_stored_hash_is_refused_like_a_wrong_password_without_allocating_it() {
        let h = cheap();
        let salt = STANDARD_NO_PAD.encode([7u8; SALT_LEN]);
        let output = STANDARD_NO_PAD.encode([9u8; OUTPUT_LEN]);
        let huge = format!(
            "$argon2id$v=19$m={},t=1,p=1${salt}${output}",
            MAX_STORED_MEMORY_KIB + 1
        );
        let before = h.verifications();
        let ok = h
            .verify_for(ME, "anything".into(), Some(huge))
            .await
            .expect("answered like a wrong password");
        assert!(!ok);
        assert_eq!(h.verifications(), before + 1);
        let garbage = h
            .verify_for(ME, "anything".into(), Some("not a hash".into()))
            .await
            .expect("answered like a wrong password");
        assert!(!garbage);
    }

    #[test]
    fn needs_rehash_is_false_only_for_the_configured_parameters() {
        let h = Hasher::new(params(128, 2), 1).expect("hasher");
        let with = |algorithm: Algorithm, version: Version, m: u32, t: u32, p: u32| {
            let params = Params::new(m, t, p, None).expect("params");
            Argon2::new(algorithm, version, params)
                .hash_password(b"pw")
                .expect("hash")
                .to_string()
        };
        let (id, v13) = (Algorithm::Argon2id, Version::V0x13);
        assert!(!h.needs_rehash(&with(id, v13, 128, 2, 1)));
        assert!(h.needs_rehash(&with(id, v13, 64, 2, 1)), "less memory");
        assert!(h.needs_rehash(&with(id, v13, 256, 2, 1)), "more memory");
        assert!(h.needs_rehash(&with(id, v13, 128, 1, 1)), "fewer passes");
        assert!(h.needs_rehash(&with(id, v13, 128, 2, 2)), "more lanes");
        assert!(h.needs_rehash(&with(Algorithm::Argon2i, v13, 128, 2, 1)));
        assert!(h.needs_rehash(&with(id, Version::V0x10, 128, 2, 1)));
        assert!(h.needs_rehash("not a PHC string"));
    }

    #[test]
    fn the_dummy_hash_is_made_with_exactly_the_configured_parameters() {
        let h = Hasher::new(params(192, 3), 1).expect("hasher");
        assert!(!h.needs_rehash(&h.dummy_hash));
        assert!(h.dummy_hash.starts_with("$argon2id$v=19$m=192,t=3,p=1$"));
        // The production defaults too: an unknown address costs what a current hash costs.
        let defaults = Argon2Params::default();
        let h = Hasher::new(defaults, 1).expect("hasher");
        assert!(!h.needs_rehash(&h.dummy_hash));
        assert!(h.dummy_hash.starts_with(&format!(
            "$argon2id$v=19$m={},t={},p={}$",
            defaults.memory_kib, defaults.iterations, defaults.parallelism
        )));
    }

    #[tokio::test]
    async fn a_flooding_client_waits_behind_its_own_backlog_not_in_front_of_others() {
        // One slot, one turn per client: A's twenty hashes form A's own line. Each hash takes
        // a few milliseconds, far longer than submitting all twenty.
        let h = Hasher::new(params(8192, 1), 1)
            .expect("hasher")
            .with_per_client(1);
        let (a, b) = (ip("192.0.2.1"), ip("2001:db8:1:2::7"));
        let finished = Arc::new(Mutex::new(Vec::new()));
        let submit = |client: IpAddr, name: &'static str| {
            let (h, finished) = (h.clone(), finished.clone());
            tokio::spawn(async move {
                let result = h.hash_for(client, format!("{name} password")).await;
                finished.lock().expect("lock").push(name);
                result
            })
        };
        let floods: Vec<_> = (0..20).map(|_| submit(a, "A")).collect();
        // Every one of A's hashes is either waiting, running or done (counted when done).
        let submitted =
            || h.clients.in_flight(&ip_subject(a)) + finished.lock().expect("lock").len();
        tokio::time::timeout(Duration::from_secs(5), async {
            while submitted() < 20 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("all of A's hashes were submitted");
        let late = submit(b, "B");
        late.await.expect("join").expect("B's hash");
        for flood in floods {
            flood.await.expect("join").expect("A's hash");
        }
        let order = finished.lock().expect("lock").clone();
        let b_at = order.iter().position(|n| *n == "B").expect("B finished");
        assert!(
            order.len() - 1 - b_at >= 15,
            "B finished after {b_at} of A's hashes: {order:?}"
        );
    }

    #[tokio::test]
    async fn a_client_with_nothing_in_flight_is_forgotten() {
        let h = cheap().with_per_client(2);
        let clients = [ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1")];
        let hashes = clients.map(|c| h.hash_for(c, "forget me".into()));
        for hash in futures_util::future::join_all(hashes).await {
            hash.expect("hash");
        }
        let map = h.clients.map.lock().expect("lock");
        assert!(map.is_empty(), "{} clients remembered", map.len());
    }

    #[tokio::test]
    async fn an_idle_hashing_thread_gives_its_memory_back_and_takes_it_again_for_new_work() {
        let h = Hasher::build(params(1024, 1), 1, Duration::from_millis(50)).expect("hasher");
        let released = |n: u64| {
            let h = h.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    while h.memory_releases() < n {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
                .expect("the buffer was released");
            }
        };
        let first = h.hash_for(ME, "first".into()).await.expect("hash");
        released(1).await;
        // A second release can only follow a second allocation.
        let second = h
            .hash_for(ME, "second".into())
            .await
            .expect("hash after a release");
        released(2).await;
        assert!(
            h.verify_for(ME, "first".into(), Some(first))
                .await
                .expect("verify")
        );
        assert!(
            h.verify_for(ME, "second".into(), Some(second))
                .await
                .expect("verify")
        );
    }

    #[test]
    fn a_buffer_is_reserved_past_the_allocator_mmap_ceiling_but_only_what_is_used_is_written() {
        let blocks = allocate(19 * 1024);
        assert_eq!(blocks.len(), 19 * 1024);
        assert!(blocks.capacity() * Block::SIZE > 32 * 1024 * 1024);
    }

    #[tokio::test]
    async fn a_request_that_waits_past_the_queue_timeout_gets_unavailable() {
        let mut h = Hasher::new(params(64, 1), 1).expect("hasher");
        h.queue_timeout = Duration::from_millis(50);
        // Hold the only slot until the second request has given up.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let holder = {
            let h = h.clone();
            tokio::spawn(async move { h.run(ME, move |_| Ok(gate.recv().is_ok())).await })
        };
        while h.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let err = h
            .hash_for(ip("192.0.2.99"), "queued".into())
            .await
            .expect_err("timed out");
        assert_eq!(err.code(), "unavailable");
        release.send(()).expect("release");
        assert!(holder.await.expect("join").expect("holder"));
        // The slot is free again: the next request is served.
        h.hash_for(ME, "after".into()).await.expect("hash");
    }

    /// Hashes of `correct horse battery staple 42` made by the frameworks' libraries (see
    /// `foreign_hash`'s tests).
    fn vectors() -> HashMap<String, String> {
        serde_json::from_str(include_str!("foreign_hash_vectors.json")).expect("vectors")
    }

    #[tokio::test]
    async fn an_argon2_string_without_a_version_is_version_16_as_libargon2_reads_it() {
        let v = vectors();
        let h = cheap();
        for scheme in ["argon2id_no_version", "argon2id_v16"] {
            let hash = &v[scheme];
            assert!(
                h.verify_for(
                    ME,
                    "correct horse battery staple 42".into(),
                    Some(hash.clone())
                )
                .await
                .expect("verify"),
                "{scheme}"
            );
            assert!(
                !h.verify_for(
                    ME,
                    "correct horse battery staple 43".into(),
                    Some(hash.clone())
                )
                .await
                .expect("verify"),
                "{scheme}"
            );
            assert!(h.needs_rehash(hash), "{scheme}");
            assert_eq!(signature(hash).expect(scheme), "argon2id:16:1024:1:1");
        }
    }

    #[test]
    fn argon2_signatures_name_variant_version_and_costs_and_their_synthetic_hashes_match() {
        let v = vectors();
        for (scheme, expected) in [
            ("argon2id", "argon2id:19:1024:1:1"),
            ("argon2i", "argon2i:19:1024:1:1"),
            ("django_argon2", "argon2id:19:1024:1:1"),
            ("argon2id_no_version", "argon2id:16:1024:1:1"),
        ] {
            assert_eq!(signature(&v[scheme]).expect(scheme), expected);
            let made = synthetic(expected).expect(expected);
            assert_eq!(signature(&made).expect(&made), expected);
            assert_eq!(memory_kib(&made), 1024);
            let verified = verify_with(
                &mut Memory::none(),
                b"correct horse battery staple 42",
                &made,
            );
            assert!(!verified.expect("verifies"), "{made}");
        }
        // Every foreign one too, through the same two functions.
        assert_eq!(signature(&v["bcrypt_2y"]).expect("bcrypt"), "bcrypt:4");
        let made = synthetic("scrypt:1024:8:1").expect("scrypt");
        assert_eq!(signature(&made).expect("scrypt"), "scrypt:1024:8:1");
        // Over the caps, or not a signature: no hash.
        for refused in [
            "argon2id:19:1048576:1:1",
            "argon2id:19:64:101:1",
            "argon2id:19:64",
            "argon2x:19:64:1:1",
        ] {
            assert!(synthetic(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_verification_takes_a_slot_per_share_of_memory_it_needs() {
        let v = vectors();
        let h = Hasher::new(params(256, 1), 4).expect("hasher");
        let argon2 = |m: u32| synthetic(&format!("argon2id:19:{m}:1:1")).expect("argon2");
        assert_eq!(h.slots_for(&argon2(64)), 1);
        assert_eq!(h.slots_for(&argon2(256)), 1);
        assert_eq!(h.slots_for(&argon2(257)), 2);
        assert_eq!(h.slots_for(&argon2(768)), 3);
        // More than all four: all four.
        assert_eq!(h.slots_for(&v["argon2id"]), 4);
        assert_eq!(h.slots_for(&v["werkzeug_scrypt"]), 4);
        // scrypt N = 2^10, r = 8: 1025 KiB.
        assert_eq!(h.slots_for(&v["phc_scrypt"]), 4);
        assert_eq!(h.slots_for(&v["bcrypt_2b"]), 1);
        assert_eq!(h.slots_for(&v["django_pbkdf2_sha256"]), 1);
        assert_eq!(h.slots_for("not a hash"), 1);
    }

    #[tokio::test]
    async fn a_verification_needing_several_slots_holds_them_all_until_it_is_done() {
        // Two threads with 64 KiB each; a 64 MiB hash (argon2-cffi's default memory) takes
        // both while it runs, and another client's hash waits for it.
        let h = Hasher::new(params(64, 1), 2).expect("hasher");
        let big = synthetic("argon2id:19:65536:2:1").expect("synthetic");
        let timing = {
            let h = h.clone();
            tokio::spawn(async move { h.time_verify(ME, big).await })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while h.slots.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both slots were taken");
        let other = h.hash_for(ip("192.0.2.7"), "waits its turn".into());
        let (other, took) = tokio::join!(other, timing);
        other.expect("hash after the big one");
        assert!(took.expect("join").expect("timed") > Duration::ZERO);
        assert_eq!(h.slots.available_permits(), 2, "every slot came back");
    }
}
