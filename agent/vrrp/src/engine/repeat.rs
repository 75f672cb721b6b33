//! The advert a backup last took from its master, kept so that the next one, byte for byte the
//! same, is not decoded and judged again.
//!
//! A settled master sends the same bytes every interval, and a backup's verdict on them (valid,
//! for this router, from its master, restart the master-down timer) depends only on those bytes,
//! the IP metadata, the interface and the engine's state. The engine keeps the advert with its
//! [`Engine::revision`](super::Engine::revision), which moves on every change of config, state,
//! priority or master; a repeat is taken as such only while the revision has not moved, no
//! router is retiring, and the router is still that master's backup with nothing to release.
//! Anything else (another source, another byte, a new revision) goes the full way.

use crate::wire::RecvMeta;

use super::{Heard, Renewal};

#[derive(Debug, Default)]
pub(super) struct Repeat {
    /// The verdict on the kept advert, and its IP metadata.
    kept: Option<(Verdict, RecvMeta)>,
    /// The advert's bytes, kept between adverts so that keeping one allocates nothing.
    payload: Vec<u8>,
    interface: String,
    /// Whether the kept advert was matched by a repeat since it was kept.
    repeated: bool,
    /// Moves whenever another advert is kept, so that a holder of a [`Steady`] can tell it
    /// still stands.
    generation: u64,
}

/// The kept advert once a repeat matched it: the bytes a settled master keeps sending, which
/// the host may hold back and hand over later, with their arrival times, without changing
/// what the engine makes of them ([`super::Engine::steady_repeat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steady<'a> {
    pub interface: &'a str,
    pub meta: &'a RecvMeta,
    /// The VRRP payload.
    pub payload: &'a [u8],
    /// Tells this advert from any other kept: a kept advert stands at one revision only, so
    /// its generation is enough.
    pub key: u64,
}

/// What a router made of an advert it took from its master.
#[derive(Debug, Clone, Copy)]
pub(super) struct Verdict {
    /// The router's index in the engine.
    pub router: usize,
    /// The engine's revision after the advert.
    pub revision: u64,
    /// What the router counted.
    pub renewal: Renewal,
    pub heard: Heard,
}

impl Repeat {
    /// Keeps an advert and the verdict on it.
    pub(super) fn keep(
        &mut self,
        interface: &str,
        meta: &RecvMeta,
        payload: &[u8],
        verdict: Verdict,
    ) {
        self.payload.clear();
        self.payload.extend_from_slice(payload);
        self.interface.clear();
        self.interface.push_str(interface);
        self.kept = Some((verdict, *meta));
        self.repeated = false;
        self.generation += 1;
    }

    /// A repeat matched the kept advert.
    pub(super) fn hit(&mut self) {
        self.repeated = true;
    }

    /// The kept advert, if a repeat matched it and it still stands at `revision`.
    pub(super) fn steady(&self, revision: u64) -> Option<Steady<'_>> {
        let (verdict, meta) = self.kept.as_ref()?;
        (self.repeated && verdict.revision == revision).then(|| Steady {
            interface: &self.interface,
            meta,
            payload: &self.payload,
            key: self.generation,
        })
    }

    /// Forgets the kept advert.
    pub(super) fn forget(&mut self) {
        self.kept = None;
    }

    /// The verdict on the kept advert, if this one is the same on the same interface at the
    /// same revision.
    pub(super) fn matches(
        &self,
        interface: &str,
        meta: &RecvMeta,
        payload: &[u8],
        revision: u64,
    ) -> Option<Verdict> {
        let (verdict, kept_meta) = self.kept.as_ref()?;
        let same = verdict.revision == revision
            && kept_meta == meta
            && self.payload == payload
            && self.interface == interface;
        same.then_some(*verdict)
    }
}
