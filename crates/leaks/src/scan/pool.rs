//! Scanning on several threads. The calling thread walks the inputs and opens archives (it owns
//! the archive readers and the run's budget); every whole file or member it hands over gets the
//! next sequence number and goes, with its bytes, through a bounded queue to a worker, which
//! sniffs, decodes and matches it into an [`Outcome`] of its own. Warnings from the walk and
//! files too large to hold in memory (streamed) are dealt with on the walking thread, numbered
//! the same way. At the end the parts are put in sequence order and appended, which gives the
//! very report a single thread would.
//!
//! Memory stays bounded: at most [`QUEUED_PER_THREAD`] files per worker wait in the queue, and
//! the files queued or being scanned hold at most [`IN_FLIGHT_BYTES`] between them (a larger
//! one is let through alone), so a 2 GB archive is never 2 GB of queued buffers.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};

use super::{Options, Outcome, Scanner};
use crate::enumerate::{Enumerator, Visit};
use crate::rule::Rules;

/// Bytes of the files queued or being scanned, at most.
const IN_FLIGHT_BYTES: u64 = 256 << 20;
/// Files waiting in the queue per worker, at most.
const QUEUED_PER_THREAD: usize = 2;

/// How much may wait for or be in the workers' hands.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    in_flight_bytes: u64,
    queued_per_thread: usize,
}

const BOUNDS: Bounds = Bounds { in_flight_bytes: IN_FLIGHT_BYTES, queued_per_thread: QUEUED_PER_THREAD };

/// Scans `inputs` with `threads` workers (more than one) beside the walking thread.
pub(super) fn scan(rules: &Rules, inputs: &[&Path], options: &Options, threads: usize) -> Outcome {
    scan_within(rules, inputs, options, threads, BOUNDS)
}

fn scan_within(rules: &Rules, inputs: &[&Path], options: &Options, threads: usize, bounds: Bounds) -> Outcome {
    let in_flight = InFlight { bytes: Mutex::new(0), freed: Condvar::new(), cap: bounds.in_flight_bytes };
    let (part_sender, part_receiver) = mpsc::channel::<Part>();
    let (mut parts, stopped) = std::thread::scope(|scope| {
        let queued = threads.saturating_mul(bounds.queued_per_thread);
        let (job_sender, job_receiver) = mpsc::sync_channel::<Job<'_>>(queued);
        // Only the workers hold the receiving end: should they all end early, handing over
        // fails instead of waiting for ever.
        let job_receiver = Arc::new(Mutex::new(job_receiver));
        for _ in 0..threads {
            let jobs = Arc::clone(&job_receiver);
            let parts = part_sender.clone();
            scope.spawn(move || work(rules, &jobs, &parts));
        }
        drop(job_receiver);
        let mut dispatcher = Dispatcher { rules, next: 0, jobs: job_sender, in_flight: &in_flight, parts: Vec::new() };
        let mut enumerator = Enumerator::new(options.limits.clone(), &mut dispatcher).with_budget(options.budget);
        for input in inputs {
            enumerator.input(input, options.gitignore);
        }
        let stopped = enumerator.stopped();
        // Dropping the sender ends the queue: the workers finish what is in it and return.
        let Dispatcher { parts, .. } = dispatcher;
        (parts, stopped)
    });
    drop(part_sender);
    parts.extend(part_receiver);
    parts.sort_unstable_by_key(|part| part.sequence);
    let mut outcome = Outcome::default();
    for part in parts {
        outcome.append(part.outcome);
    }
    outcome.partial = stopped;
    outcome
}

/// What one file or warning gave, and its place in the run.
struct Part {
    sequence: u64,
    outcome: Outcome,
}

/// A file handed to a worker.
struct Job<'f> {
    sequence: u64,
    path: Vec<String>,
    bytes: Vec<u8>,
    /// Given back (by being dropped) once the file is scanned, whatever happens.
    _permit: Permit<'f>,
}

fn work(rules: &Rules, jobs: &Mutex<mpsc::Receiver<Job<'_>>>, parts: &mpsc::Sender<Part>) {
    loop {
        // The lock is held only to take the next job, not while scanning it.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Job { sequence, path, bytes, _permit: permit }) = job else { return };
        let mut scanner = Scanner::new(rules);
        scanner.file(&path, Cow::Owned(bytes));
        drop(permit);
        if parts.send(Part { sequence, outcome: scanner.outcome }).is_err() {
            return;
        }
    }
}

/// The visitor on the walking thread: numbers what the enumerator hands over, queues whole
/// files for the workers and deals with the rest itself.
struct Dispatcher<'r, 'f> {
    rules: &'r Rules,
    next: u64,
    jobs: mpsc::SyncSender<Job<'f>>,
    in_flight: &'f InFlight,
    /// Parts made on this thread: warnings and streamed files.
    parts: Vec<Part>,
}

impl std::fmt::Debug for Dispatcher<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("next", &self.next).finish_non_exhaustive()
    }
}

impl Dispatcher<'_, '_> {
    fn sequence(&mut self) -> u64 {
        let sequence = self.next;
        self.next += 1;
        sequence
    }

    /// Scans on this thread.
    fn here(&mut self, scan: impl FnOnce(&mut Scanner<'_>)) {
        let sequence = self.sequence();
        let mut scanner = Scanner::new(self.rules);
        scan(&mut scanner);
        self.parts.push(Part { sequence, outcome: scanner.outcome });
    }
}

impl Visit for Dispatcher<'_, '_> {
    fn file(&mut self, path: &[String], bytes: Cow<'_, [u8]>) {
        let permit = self.in_flight.acquire(bytes.len() as u64);
        let sequence = self.sequence();
        let job = Job { sequence, path: path.to_vec(), bytes: bytes.into_owned(), _permit: permit };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // Every worker has ended (only a panic does that, and the scope re-raises it): scan
            // here rather than lose the file.
            let Job { sequence, path, bytes, _permit: permit } = job;
            drop(permit);
            let mut scanner = Scanner::new(self.rules);
            scanner.file(&path, Cow::Owned(bytes));
            self.parts.push(Part { sequence, outcome: scanner.outcome });
        }
    }

    fn large_file(&mut self, path: &[String], reader: &mut dyn Read) {
        // Streamed in pieces, so it holds little memory: not worth a worker.
        self.here(|scanner| scanner.large_file(path, reader));
    }

    fn warning(&mut self, path: &[String], message: String) {
        self.here(|scanner| scanner.warning(path, message));
    }
}

/// The bytes of the files queued or being scanned, against a cap.
#[derive(Debug)]
struct InFlight {
    bytes: Mutex<u64>,
    freed: Condvar,
    cap: u64,
}

impl InFlight {
    /// Waits until `bytes` more fit under the cap (or nothing else is in flight), then takes them.
    fn acquire(&self, bytes: u64) -> Permit<'_> {
        let mut held = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        while *held > 0 && held.saturating_add(bytes) > self.cap {
            held = self.freed.wait(held).unwrap_or_else(PoisonError::into_inner);
        }
        *held = held.saturating_add(bytes);
        Permit { in_flight: self, bytes }
    }
}

/// Bytes taken from an [`InFlight`], given back when dropped.
#[derive(Debug)]
struct Permit<'f> {
    in_flight: &'f InFlight,
    bytes: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut held = self.in_flight.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        *held = held.saturating_sub(self.bytes);
        self.in_flight.freed.notify_all();
    }
}

#[cfg(test)]
mod tests;
