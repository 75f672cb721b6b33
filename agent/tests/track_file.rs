//! File tracker against real files: in-place writes, atomic replace by rename, garbage, deletion.

mod track_support;

use hav_agent::track::{self, FileSpec, Health, TrackSpec};
use tokio::sync::mpsc;
use track_support::{TempDir, down_reason, next_health};

#[tokio::test]
async fn follows_writes_renames_garbage_and_deletion() {
    let dir = TempDir::new();
    let path = dir.join("weight");
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker =
        track::spawn("file", TrackSpec::File(FileSpec { path: path.clone() }), tx).expect("spawn");

    let missing = next_health(&mut rx).await;
    assert!(down_reason(&missing).contains("cannot read"), "{missing:?}");

    std::fs::write(&path, "5\n").expect("write");
    assert_eq!(next_health(&mut rx).await, Health::Value(5));

    // Atomic replace: write a temporary file, rename it over.
    let temporary = dir.join(".weight.tmp");
    std::fs::write(&temporary, "-7\n").expect("write temporary");
    std::fs::rename(&temporary, &path).expect("rename");
    assert_eq!(next_health(&mut rx).await, Health::Value(-7));

    std::fs::write(&path, "twelve").expect("write garbage");
    let garbled = next_health(&mut rx).await;
    assert!(
        down_reason(&garbled).contains("not an integer"),
        "{garbled:?}"
    );

    // Another file in the same directory is not reported; the next event is ours.
    std::fs::write(dir.join("unrelated"), "99").expect("write unrelated");
    std::fs::write(&path, "3").expect("write");
    assert_eq!(next_health(&mut rx).await, Health::Value(3));

    std::fs::write(&path, "").expect("truncate");
    let empty = next_health(&mut rx).await;
    assert!(down_reason(&empty).contains("empty"), "{empty:?}");

    std::fs::write(&path, "0").expect("write");
    assert_eq!(next_health(&mut rx).await, Health::Value(0));

    std::fs::remove_file(&path).expect("remove");
    let removed = next_health(&mut rx).await;
    assert!(down_reason(&removed).contains("cannot read"), "{removed:?}");

    // Renamed away and back.
    std::fs::write(&temporary, "8").expect("write temporary");
    std::fs::rename(&temporary, &path).expect("rename in");
    assert_eq!(next_health(&mut rx).await, Health::Value(8));
    std::fs::rename(&path, &temporary).expect("rename away");
    assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));
}

#[tokio::test]
async fn a_missing_directory_is_a_start_error() {
    let dir = TempDir::new();
    let path = dir.join("no-such-dir").join("weight");
    let (tx, _rx) = mpsc::channel(16);
    let error = track::spawn("file", TrackSpec::File(FileSpec { path }), tx)
        .expect_err("directory does not exist");
    assert!(error.to_string().contains("no-such-dir"), "{error}");
}

/// The one periodic part: a removed directory is watched again once it exists again.
#[tokio::test]
async fn a_removed_directory_is_watched_again_when_recreated() {
    let dir = TempDir::new();
    let sub = dir.join("state");
    std::fs::create_dir(&sub).expect("mkdir");
    let path = sub.join("weight");
    std::fs::write(&path, "4").expect("write");
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker =
        track::spawn("file", TrackSpec::File(FileSpec { path: path.clone() }), tx).expect("spawn");
    assert_eq!(next_health(&mut rx).await, Health::Value(4));

    std::fs::remove_dir_all(&sub).expect("rmdir");
    assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));

    std::fs::create_dir(&sub).expect("mkdir again");
    std::fs::write(&path, "6").expect("write again");
    assert_eq!(next_health(&mut rx).await, Health::Value(6));
    // And the new watch sees later writes as events.
    std::fs::write(&path, "9").expect("write");
    assert_eq!(next_health(&mut rx).await, Health::Value(9));
}
