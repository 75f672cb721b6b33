//! File tracker (keepalived `track_file`): a file holding one integer, reported as
//! [`Health::Value`]; the daemon multiplies it by the weight (see [`super::contribution`]).
//!
//! Guarantees: the file is re-read after every change inotify reports on its directory, so both an
//! in-place write (seen when the writer closes it) and an atomic replace by rename are seen,
//! without polling; a missing, unreadable, empty or non-integer file is `Down` with the reason.
//! Content is ASCII decimal with optional sign and surrounding whitespace (e.g. `-20\n`);
//! anything else is rejected rather than half-parsed.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::dirwatch::FileWatch;
use super::{Health, Reporter, TrackError};

/// Configuration of a file tracker.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: PathBuf,
}

/// Longest content read; a valid file is far shorter.
const MAX_CONTENT: u64 = 256;

pub(crate) struct FileTracker {
    path: PathBuf,
    watch: FileWatch,
}

impl FileTracker {
    pub(crate) fn new(spec: FileSpec, reporter: &Reporter) -> Result<Self, TrackError> {
        let watch = FileWatch::new(&spec.path).map_err(|source| TrackError::Watch {
            name: reporter.name().to_owned(),
            path: spec.path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: spec.path,
            watch,
        })
    }

    pub(crate) async fn run(mut self, mut reporter: Reporter) {
        loop {
            let health = read_value(&self.path).await;
            if reporter.report(health).await.is_err() {
                return;
            }
            if let Err(error) = self.watch.changed().await {
                let reason = format!("inotify failed, no longer watching: {error}");
                let _ = reporter.report(Health::down(reason)).await;
                return;
            }
        }
    }
}

async fn read_value(path: &Path) -> Health {
    let mut content = Vec::new();
    let read = async {
        let file = tokio::fs::File::open(path).await?;
        file.take(MAX_CONTENT + 1).read_to_end(&mut content).await
    };
    if let Err(error) = read.await {
        return Health::down(format!("cannot read {}: {error}", path.display()));
    }
    match parse_value(&content) {
        Ok(value) => Health::Value(value),
        Err(reason) => Health::down(format!("{}: {reason}", path.display())),
    }
}

fn parse_value(content: &[u8]) -> Result<i64, String> {
    if content.len() as u64 > MAX_CONTENT {
        return Err(format!("longer than {MAX_CONTENT} bytes"));
    }
    let text = std::str::from_utf8(content).map_err(|_| "not UTF-8".to_owned())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("empty".to_owned());
    }
    text.parse::<i64>().map_err(|error| {
        let shown: String = text.chars().take(32).collect();
        format!("not an integer ({error}): {shown:?}")
    })
}

#[cfg(test)]
mod tests {
    use super::parse_value;

    #[test]
    fn parses_signed_integers_with_whitespace() {
        assert_eq!(parse_value(b"42\n"), Ok(42));
        assert_eq!(parse_value(b"  -17  \n"), Ok(-17));
        assert_eq!(parse_value(b"+3"), Ok(3));
        assert_eq!(parse_value(b"0"), Ok(0));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"\n",
            b"abc",
            b"12 34",
            b"1.5",
            b"\xff\xfe",
            b"99999999999999999999",
        ] {
            assert!(parse_value(bad).is_err(), "{bad:?}");
        }
        assert!(parse_value(&[b'1'; 300]).is_err());
    }
}
