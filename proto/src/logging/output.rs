//! The log output on a thread of its own, so that a daemon's event loop never waits for its log.
//!
//! Guarantees:
//! - An event is rendered on the thread that logs it and handed to a bounded queue; only the
//!   output thread (`log-output`) makes the system calls that write it, in the order logged.
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

/// Where the output thread writes an entry.
pub trait Sink: Send + 'static {
    /// Writes one rendered entry (a text or JSON line with its newline, or a journal entry).
    fn write_entry(&mut self, entry: &[u8]);
}

/// Lines to stderr, each with one `write` (the line is whole in the queue).
#[derive(Debug, Default)]
pub struct Stderr;

impl Sink for Stderr {
    fn write_entry(&mut self, entry: &[u8]) {
        let _ = io::stderr().lock().write_all(entry);
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

/// The output thread: writes entries in order, reports drops once it has caught up with one.
fn drain(entries: Receiver<Message>, mut sink: impl Sink, dropped: &AtomicU64) {
    while let Ok(message) = entries.recv() {
        match message {
            Message::Entry(entry) => sink.write_entry(&entry),
            Message::Flush(done) => {
                let _ = done.try_send(());
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            // Logged like any event, so it reaches this queue in the format in force; the queue
            // has room, as this thread just took an entry from it.
            tracing::warn!(
                dropped = lost,
                "{lost} log entries dropped: the log output did not keep up"
            );
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

    /// A sink that writes only when the test lets it, and shows what it wrote.
    struct Gated {
        gate: Receiver<()>,
        written: Written,
    }

    impl Sink for Gated {
        fn write_entry(&mut self, entry: &[u8]) {
            let _ = self.gate.recv();
            self.written.lock().expect("lock").push(entry.to_vec());
        }
    }

    fn gated(capacity: usize) -> (Output, SyncSender<()>, Written) {
        let (open, gate) = mpsc::sync_channel(1024);
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Gated {
            gate,
            written: Arc::clone(&written),
        };
        (Output::start(sink, capacity).expect("start"), open, written)
    }

    #[test]
    fn a_stalled_sink_never_blocks_the_logger_and_its_losses_are_counted() {
        let (output, open, written) = gated(4);
        // The sink holds the first entry; four more fill the queue; the rest are dropped.
        for n in 0..20u8 {
            output.submit(vec![n]);
        }
        // One entry may sit in the sink (taken from the queue), four in the queue.
        let dropped = output.dropped();
        assert!((15..=16).contains(&dropped), "dropped {dropped}");
        assert!(!output.flush(Duration::from_millis(50)), "a stalled sink");
        for _ in 0..64 {
            open.send(()).expect("gate");
        }
        assert!(output.flush(Duration::from_secs(5)));
        let written = written.lock().expect("lock");
        let kept: Vec<u8> = written.iter().map(|e| e[0]).collect();
        // What was kept is in order, the oldest first: the sink may take the first entry from
        // the queue at any moment of the burst, making room for one later entry.
        assert_eq!(kept[..4], [0, 1, 2, 3], "{kept:?}");
        assert!(kept.windows(2).all(|pair| pair[0] < pair[1]), "{kept:?}");
        assert_eq!(kept.len() as u64 + dropped, 20);
        assert_eq!(output.dropped(), 0, "the count is reported once caught up");
    }

    #[test]
    fn flush_waits_for_everything_queued_before_it() {
        let (output, open, written) = gated(64);
        for n in 0..10u8 {
            output.submit(vec![n]);
        }
        for _ in 0..10 {
            open.send(()).expect("gate");
        }
        assert!(output.flush(Duration::from_secs(5)));
        assert_eq!(written.lock().expect("lock").len(), 10);
        assert_eq!(output.dropped(), 0);
    }

    #[test]
    fn an_event_is_submitted_whole_when_the_layer_drops_its_writer() {
        let (output, open, written) = gated(8);
        let writer = Writer(output.clone());
        {
            let mut buffer = writer.make_writer();
            buffer.write_all(b"INFO ").expect("write");
            buffer.write_all(b"hello\n").expect("write");
            assert_eq!(written.lock().expect("lock").len(), 0);
        }
        open.send(()).expect("gate");
        assert!(output.flush(Duration::from_secs(5)));
        assert_eq!(
            *written.lock().expect("lock"),
            vec![b"INFO hello\n".to_vec()]
        );
    }
}
