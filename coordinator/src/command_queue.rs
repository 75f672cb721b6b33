//! The queue of commands for one agent's session: the registry sends into it, the session's
//! response stream receives from it.
//!
//! One exists for every connected agent for as long as its session lasts, idle nearly always, so
//! it is small: a lock, a list that allocates only once a command is queued, and the waker of the
//! one receiver (a general-purpose channel allocates its slots and cache-padded state up front,
//! several hundred bytes per agent). The receiver is polled ([`CommandReceiver::poll_recv`]), so
//! the stream it feeds keeps no future of its own.
//!
//! Guarantees, as a bounded channel's: at most `capacity` commands wait (a send beyond that is
//! refused as [`TrySendError::Full`]); a send once the receiver is gone is refused as
//! [`TrySendError::Closed`]; the receiver gets every queued command in order, then `None` once
//! every sender is gone.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use hav_proto::v1::Command;

/// Why a command was not queued; the command comes back.
#[derive(Debug)]
pub enum TrySendError {
    /// `capacity` commands are already waiting.
    Full(Box<Command>),
    /// The receiver is gone (the session's stream ended).
    Closed(Box<Command>),
}

/// Why nothing was received without waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is queued, and a sender remains.
    Empty,
    /// Nothing is queued, and every sender is gone.
    Disconnected,
}

/// A queue holding at most `capacity` commands.
pub fn command_queue(capacity: usize) -> (CommandSender, CommandReceiver) {
    let shared = Arc::new(Mutex::new(State {
        commands: VecDeque::new(),
        capacity,
        senders: 1,
        receiving: true,
        waiting: None,
    }));
    (
        CommandSender {
            shared: shared.clone(),
        },
        CommandReceiver { shared },
    )
}

struct State {
    commands: VecDeque<Box<Command>>,
    capacity: usize,
    senders: usize,
    receiving: bool,
    /// The receiver's waker while it waits: woken when a command is queued or the last sender
    /// goes.
    waiting: Option<Waker>,
}

impl State {
    /// The next command, or why there is none.
    fn take(&mut self) -> Result<Box<Command>, TryRecvError> {
        match self.commands.pop_front() {
            Some(command) => Ok(command),
            None if self.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing panics while holding the lock; a poisoned one still holds consistent state.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending end; clones send into the same queue.
pub struct CommandSender {
    shared: Arc<Mutex<State>>,
}

impl CommandSender {
    /// Queues `command` without waiting.
    pub fn try_send(&self, command: Box<Command>) -> Result<(), TrySendError> {
        let waiting = {
            let mut state = lock(&self.shared);
            if !state.receiving {
                return Err(TrySendError::Closed(command));
            }
            if state.commands.len() >= state.capacity {
                return Err(TrySendError::Full(command));
            }
            state.commands.push_back(command);
            state.waiting.take()
        };
        if let Some(receiver) = waiting {
            receiver.wake();
        }
        Ok(())
    }
}

impl Clone for CommandSender {
    fn clone(&self) -> Self {
        lock(&self.shared).senders += 1;
        CommandSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for CommandSender {
    fn drop(&mut self) {
        let waiting = {
            let mut state = lock(&self.shared);
            state.senders -= 1;
            if state.senders == 0 {
                state.waiting.take()
            } else {
                None
            }
        };
        if let Some(receiver) = waiting {
            receiver.wake();
        }
    }
}

/// The receiving end.
pub struct CommandReceiver {
    shared: Arc<Mutex<State>>,
}

impl CommandReceiver {
    /// The next command, waiting for one; `None` once none is queued and every sender is gone.
    /// Cancel-safe: a command is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<Box<Command>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next command if one is queued, `None` once none is and every sender is gone;
    /// otherwise `Pending`, and `cx` is woken by the next send or the last sender's going.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Box<Command>>> {
        let mut state = lock(&self.shared);
        match state.take() {
            Ok(command) => Poll::Ready(Some(command)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                // Checked and registered under the same lock as a send: nothing is missed.
                match &mut state.waiting {
                    Some(waker) => waker.clone_from(cx.waker()),
                    none => *none = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// The next command if one is queued.
    pub fn try_recv(&mut self) -> Result<Box<Command>, TryRecvError> {
        lock(&self.shared).take()
    }

    /// Whether every sender is gone (commands may still be queued).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).senders == 0
    }
}

impl Drop for CommandReceiver {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.receiving = false;
        state.commands.clear();
        state.waiting = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: u64) -> Box<Command> {
        Box::new(Command {
            id,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn commands_arrive_in_order_then_none_once_every_sender_is_gone() {
        let (tx, mut rx) = command_queue(4);
        let other = tx.clone();
        tx.try_send(command(1)).expect("room for it");
        other.try_send(command(2)).expect("room for it");
        drop(tx);
        assert!(!rx.is_closed());
        assert_eq!(rx.recv().await.map(|c| c.id), Some(1));
        drop(other);
        assert!(rx.is_closed());
        assert_eq!(rx.recv().await.map(|c| c.id), Some(2));
        assert_eq!(rx.recv().await.map(|c| c.id), None);
        assert_eq!(rx.try_recv().map(|c| c.id), Err(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_command_and_for_the_last_sender_leaving() {
        let (tx, mut rx) = command_queue(4);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await.map(|c| c.id);
            let end = rx.recv().await.map(|c| c.id);
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.try_send(command(7)).expect("room for it");
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.expect("the receiver ran"), (Some(7), None));
    }

    #[test]
    fn a_full_queue_and_a_gone_receiver_refuse_the_command() {
        let (tx, mut rx) = command_queue(2);
        tx.try_send(command(1)).expect("room for it");
        tx.try_send(command(2)).expect("room for it");
        assert!(matches!(tx.try_send(command(3)), Err(TrySendError::Full(c)) if c.id == 3));
        assert_eq!(rx.try_recv().map(|c| c.id), Ok(1));
        tx.try_send(command(3)).expect("room again");
        drop(rx);
        assert!(matches!(tx.try_send(command(4)), Err(TrySendError::Closed(c)) if c.id == 4));
    }
}
