//! The log output on a thread of its own, so that a daemon's event loop never waits for its log.
//!
//! Guarantees:
//! - An event is rendered on the thread that logs it and handed to a bounded queue; only the
//!   output thread (`log-output`) makes the system calls that write it, in the order logged.
//! - An entry logged after a quiet spell is written at once. In a burst (10,000 agents
//!   connecting), the output thread writes what is queued together, then pauses for
//!   [`BURST_PAUSE`] to let the next entries gather: waking it for each entry cost more than
//!   rendering them, and a paused output thread is not woken by the loggers at all.
//! - Logging never blocks. When the output is slower than the events (a journald that stalls,
//!   a pipe nobody reads, a disk busy writing back), the queue fills and later entries are
//!   dropped and counted; as soon as the output takes entries again, the count is reported as a
//!   WARN event through the same output (so in the format in force).
//! - [`Output::flush`] returns once everything queued before it is written, or after its
//!   deadline: a daemon's last lines are not lost, and a dead output cannot hold up its exit.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Entries queued at most; at a few hundred bytes each, well under a megabyte.
pub const QUEUE_ENTRIES: usize = 4096;

/// Entries written together at most.
const BATCH_ENTRIES: usize = 256;

/// How long the output thread waits after writing more than one entry at once. The queue holds
/// [`QUEUE_ENTRIES`], so only a burst of more than 400,000 entries a second could fill it meanwhile.
pub const BURST_PAUSE: Duration = Duration::from_millis(10);

/// Where the output thread writes entries.
pub trait Sink: Send + 'static {
    /// Writes one rendered entry (a text or JSON line with its newline, or a journal entry).
    fn write_entry(&mut self, entry: &[u8]);

    /// Writes entries in order; a sink that can write them at once overrides this.
    fn write_entries(&mut self, entries: &[Vec<u8>]) {
        for entry in entries {
            self.write_entry(entry);
        }
    }
}

/// Lines to stderr: each line with one `write` (the line is whole in the queue), and the lines
/// queued together with one `write`.
#[derive(Debug, Default)]
pub struct Stderr;

impl Sink for Stderr {
    fn write_entry(&mut self, entry: &[u8]) {
        let _ = io::stderr().lock().write_all(entry);
    }

    fn write_entries(&mut self, entries: &[Vec<u8>]) {
        if let [entry] = entries {
            return self.write_entry(entry);
        }
        let _ = io::stderr().lock().write_all(&entries.concat());
    }
}

enum Message {
    Entry(Vec<u8>),
    /// Answered once every entry queued before it is written.
    Flush(SyncSender<()>),
}

/// The producers' end of the output; cheap to clone.
#[derive(Clone)]
pub struct Output {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Output {
    /// Starts the output thread writing to `sink`, with room for `capacity` entries.
    pub fn start(sink: impl Sink, capacity: usize) -> io::Result<Output> {
        let (queue, entries) = mpsc::sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("log-output".into())
            .spawn(move || drain(entries, sink, &counter))?;
        Ok(Output { queue, dropped })
    }

    /// Queues one entry; drops and counts it if the queue is full.
    pub fn submit(&self, entry: Vec<u8>) {
        if entry.is_empty() {
            return;
        }
        match self.queue.try_send(Message::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything queued so far is written, for at most `timeout`. Whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done, written) = mpsc::sync_channel(1);
        let mut message = Message::Flush(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    message = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        !matches!(
            written.recv_timeout(left),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected)
        )
    }
}

/// The output thread: writes entries in order, those queued together at once, and reports drops
/// once it has caught up with one.
fn drain(entries: Receiver<Message>, mut sink: impl Sink, dropped: &AtomicU64) {
    let mut batch = Vec::new();
    while let Ok(first) = entries.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(message) = next {
            taken += 1;
            match message {
                Message::Entry(entry) => batch.push(entry),
                Message::Flush(done) => {
                    // Answered once what came before it is written.
                    sink.write_entries(&batch);
                    batch.clear();
                    let _ = done.try_send(());
                }
            }
            next = (taken < BATCH_ENTRIES)
                .then(|| entries.try_recv().ok())
                .flatten();
        }
        sink.write_entries(&batch);
        batch = Vec::new();
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            // Logged like any event, so it reaches this queue in the format in force; the queue
            // has room, as this thread just took an entry from it.
            tracing::warn!(
                dropped = lost,
                "{lost} log entries dropped: the log output did not keep up"
            );
        }
        if taken > 1 {
            std::thread::sleep(BURST_PAUSE);
        }
    }
}

/// A `MakeWriter` for the `fmt` layers: each event is rendered into a buffer, submitted whole
/// when the layer is done with it.
#[derive(Debug, Clone)]
pub struct Writer(pub Output);

impl<'a> MakeWriter<'a> for Writer {
    type Writer = EntryBuffer<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EntryBuffer {
            output: &self.0,
            entry: Vec::with_capacity(256),
        }
    }
}

/// One event as the `fmt` layer writes it.
pub struct EntryBuffer<'a> {
    output: &'a Output,
    entry: Vec<u8>,
}

impl Write for EntryBuffer<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.entry.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EntryBuffer<'_> {
    fn drop(&mut self) {
        self.output.submit(std::mem::take(&mut self.entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::Receiver;

    type Written = Arc<Mutex<Vec<Vec<u8>>>>;

    /// A sink that writes only when the test lets it, says when it holds an entry, and shows
    /// what it wrote and in which batches.
    struct Gated {
        gate: Receiver<()>,
        entered: SyncSender<()>,
        written: Written,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for Gated {
        fn write_entry(&mut self, entry: &[u8]) {
            let _ = self.entered.try_send(());
            let _ = self.gate.recv();
            self.written.lock().expect("lock").push(entry.to_vec());
        }

        fn write_entries(&mut self, entries: &[Vec<u8>]) {
            if !entries.is_empty() {
                self.batches.lock().expect("lock").push(entries.len());
            }
            for entry in entries {
                self.write_entry(entry);
            }
        }
    }

    struct Harness {
        output: Output,
        open: SyncSender<()>,
        entered: Receiver<()>,
        written: Written,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    fn gated(capacity: usize) -> Harness {
        let (open, gate) = mpsc::sync_channel(1024);
        let (entered_tx, entered) = mpsc::sync_channel(1024);
        let written = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sink = Gated {
            gate,
            entered: entered_tx,
            written: Arc::clone(&written),
            batches: Arc::clone(&batches),
        };
        let output = Output::start(sink, capacity).expect("start");
        Harness {
            output,
            open,
            entered,
            written,
            batches,
        }
    }

    impl Harness {
        /// Submits `first` and returns once the sink holds it, alone in its batch.
        fn stall_on(&self, first: u8) {
            self.output.submit(vec![first]);
            self.entered
                .recv_timeout(Duration::from_secs(5))
                .expect("the sink takes the entry");
        }

        fn open(&self, entries: usize) {
            for _ in 0..entries {
                self.open.send(()).expect("gate");
            }
        }

        fn kept(&self) -> Vec<u8> {
            let written = self.written.lock().expect("lock");
            written.iter().map(|e| e[0]).collect()
        }
    }

    #[test]
    fn a_stalled_sink_never_blocks_the_logger_and_its_losses_are_counted() {
        let h = gated(4);
        // The sink holds the first entry; four more fill the queue; the rest are dropped.
        h.stall_on(0);
        for n in 1..20u8 {
            h.output.submit(vec![n]);
        }
        assert_eq!(h.output.dropped(), 15);
        assert!(!h.output.flush(Duration::from_millis(50)), "a stalled sink");
        h.open(64);
        assert!(h.output.flush(Duration::from_secs(5)));
        // What was kept is in order, the oldest first.
        assert_eq!(h.kept(), [0, 1, 2, 3, 4]);
        assert_eq!(
            h.output.dropped(),
            0,
            "the count is reported once caught up"
        );
    }

    #[test]
    fn entries_queued_together_are_written_in_one_batch() {
        let h = gated(64);
        h.stall_on(0);
        for n in 1..=10u8 {
            h.output.submit(vec![n]);
        }
        h.open(64);
        assert!(h.output.flush(Duration::from_secs(5)));
        assert_eq!(h.kept(), (0..=10).collect::<Vec<u8>>());
        assert_eq!(*h.batches.lock().expect("lock"), [1, 10]);
    }

    #[test]
    fn flush_waits_for_everything_queued_before_it() {
        let h = gated(64);
        for n in 0..10u8 {
            h.output.submit(vec![n]);
        }
        h.open(10);
        assert!(h.output.flush(Duration::from_secs(5)));
        assert_eq!(h.kept().len(), 10);
        assert_eq!(h.output.dropped(), 0);
    }

    #[test]
    fn an_event_is_submitted_whole_when_the_layer_drops_its_writer() {
        let h = gated(8);
        let writer = Writer(h.output.clone());
        {
            let mut buffer = writer.make_writer();
            buffer.write_all(b"INFO ").expect("write");
            buffer.write_all(b"hello\n").expect("write");
            assert!(h.kept().is_empty());
        }
        h.open(1);
        assert!(h.output.flush(Duration::from_secs(5)));
        assert_eq!(
            *h.written.lock().expect("lock"),
            vec![b"INFO hello\n".to_vec()]
        );
    }
}
