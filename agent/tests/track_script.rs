//! Script tracker against real programs: rise/fall, the timeout killing the process group,
//! arguments passed without a shell, running as `nobody`, and stopping the tracker killing a run.

mod track_support;

use std::time::{Duration, Instant};

use hav_agent::track::{self, Health, InitialHealth, Program, RunAs, ScriptSpec, TrackSpec};
use tokio::sync::mpsc;
use track_support::{TempDir, await_exit, down_reason, is_down, next_health, read_fifo};

fn fast(program: Program) -> ScriptSpec {
    ScriptSpec {
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
        ..ScriptSpec::new(program)
    }
}

/// The script exits with the n-th code of `codes` on its n-th run, then with 1 forever.
fn sequenced_script(dir: &TempDir, codes: &[u8]) -> Program {
    let list: Vec<String> = codes.iter().map(u8::to_string).collect();
    std::fs::write(dir.join("codes"), list.join("\n") + "\n").expect("write codes");
    let body = format!(
        "#!/bin/sh\nd={dir}\nn=$(cat $d/count 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > $d/count\n\
         code=$(sed -n \"${{n}}p\" $d/codes)\nexit ${{code:-1}}\n",
        dir = dir.path().display()
    );
    Program::new(dir.script("check.sh", &body), Vec::<String>::new())
}

fn runs(dir: &TempDir) -> u32 {
    std::fs::read_to_string(dir.join("count"))
        .expect("count file")
        .trim()
        .parse()
        .expect("count")
}

#[tokio::test]
async fn fall_and_rise_debounce_consecutive_results() {
    let dir = TempDir::new();
    // Runs:  1  2  3  4  5  6  7  8  9 10 11, then failures.
    // fall 2, rise 3: Up at 1, a lone failure (2) ignored, Down at 5, a failure at 8 resets the
    // rise count, Up at 11, Down at 13.
    let program = sequenced_script(&dir, &[0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0]);
    let spec = ScriptSpec {
        rise: 3,
        fall: 2,
        ..fast(program)
    };
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("chk", TrackSpec::Script(spec), tx).expect("spawn");

    assert_eq!(next_health(&mut rx).await, Health::Up);
    assert!(runs(&dir) >= 1);
    let down = next_health(&mut rx).await;
    assert!(down_reason(&down).contains("exit status: 1"), "{down:?}");
    assert!(runs(&dir) >= 5);
    assert_eq!(next_health(&mut rx).await, Health::Up);
    assert!(runs(&dir) >= 11);
    assert!(is_down(&next_health(&mut rx).await));
    assert!(runs(&dir) >= 13);
}

#[tokio::test]
async fn initial_down_waits_for_rise_successes() {
    let dir = TempDir::new();
    let program = sequenced_script(&dir, &[0, 0, 0, 0, 0, 0]);
    let spec = ScriptSpec {
        rise: 2,
        initial: InitialHealth::Down,
        ..fast(program)
    };
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("chk", TrackSpec::Script(spec), tx).expect("spawn");
    let initial = next_health(&mut rx).await;
    assert_eq!(down_reason(&initial), "not yet run");
    assert_eq!(next_health(&mut rx).await, Health::Up);
    assert!(runs(&dir) >= 2, "rise 2 needs two successful runs");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = TempDir::new();
    let fifo = dir.fifo("pids");
    // A grandchild in the same process group, then the script hangs waiting for it.
    let body = format!(
        "#!/bin/sh\nsleep 1000 &\necho \"$$ $!\" > {fifo}\nwait\n",
        fifo = fifo.display()
    );
    let program = Program::new(dir.script("hang.sh", &body), Vec::<String>::new());
    let spec = ScriptSpec {
        interval: Duration::from_secs(1000),
        timeout: Duration::from_millis(300),
        ..ScriptSpec::new(program)
    };
    let (tx, mut rx) = mpsc::channel(16);
    let started = Instant::now();
    let _tracker = track::spawn("hang", TrackSpec::Script(spec), tx).expect("spawn");

    let pids = read_fifo(&fifo).await;
    let down = next_health(&mut rx).await;
    println!(
        "timed-out script reported down after {:?}",
        started.elapsed()
    );
    assert!(down_reason(&down).contains("timeout"), "{down:?}");
    let mut pids = pids
        .split_whitespace()
        .map(|pid| pid.parse::<i32>().expect("pid"));
    let (script, grandchild) = (
        pids.next().expect("script pid"),
        pids.next().expect("child pid"),
    );
    await_exit(script).await;
    await_exit(grandchild).await;
}

#[tokio::test]
async fn arguments_reach_the_program_verbatim() {
    let dir = TempDir::new();
    let fifo = dir.fifo("args");
    let marker = dir.join("pwned");
    let body = format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {fifo}\n",
        fifo = fifo.display()
    );
    let hostile = format!("$(touch {})", marker.display());
    let args = vec![
        "a b".to_owned(),
        hostile.clone(),
        "*".to_owned(),
        "; exit 1".to_owned(),
    ];
    let program = Program::new(dir.script("args.sh", &body), args);
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("args", TrackSpec::Script(fast(program)), tx).expect("spawn");

    let received = read_fifo(&fifo).await;
    assert_eq!(received, format!("a b\n{hostile}\n*\n; exit 1\n"));
    assert_eq!(next_health(&mut rx).await, Health::Up);
    assert!(!marker.exists(), "an argument was interpreted by a shell");
}

#[tokio::test]
async fn runs_as_nobody() {
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd lookup")
        .expect("user nobody exists");
    let dir = TempDir::new();
    let fifo = dir.fifo("ids");
    let body = format!(
        "#!/bin/sh\necho \"$(id -u) $(id -g) $(id -G)\" > {}\n",
        fifo.display()
    );
    let program = Program::new(dir.script("id.sh", &body), Vec::<String>::new()).run_as(RunAs {
        user: "nobody".to_owned(),
        group: None,
    });
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("id", TrackSpec::Script(fast(program)), tx).expect("spawn");

    let ids = read_fifo(&fifo).await;
    let expected = format!("{uid} {gid} {gid}\n", uid = nobody.uid, gid = nobody.gid);
    assert_eq!(ids, expected, "uid, gid and supplementary groups");
    assert_eq!(next_health(&mut rx).await, Health::Up);
}

#[tokio::test]
async fn unknown_user_is_a_start_error() {
    let program = Program::new("/bin/true", Vec::<String>::new()).run_as(RunAs {
        user: "hav-no-such-user".to_owned(),
        group: None,
    });
    let (tx, _rx) = mpsc::channel(16);
    let error = track::spawn("bad", TrackSpec::Script(ScriptSpec::new(program)), tx)
        .expect_err("unknown user");
    assert!(error.to_string().contains("hav-no-such-user"), "{error}");
}

#[tokio::test]
async fn stopping_the_tracker_kills_a_running_script() {
    let dir = TempDir::new();
    let fifo = dir.fifo("pid");
    let body = format!("#!/bin/sh\necho $$ > {}\nexec sleep 1000\n", fifo.display());
    let program = Program::new(dir.script("long.sh", &body), Vec::<String>::new());
    let spec = ScriptSpec {
        timeout: Duration::from_secs(1000),
        ..fast(program)
    };
    let (tx, _rx) = mpsc::channel(16);
    let tracker = track::spawn("long", TrackSpec::Script(spec), tx).expect("spawn");

    let pid: i32 = read_fifo(&fifo).await.trim().parse().expect("pid");
    tracker.stop().await;
    await_exit(pid).await;
}
