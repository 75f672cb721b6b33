//! The routers' next deadlines, earliest first.
//!
//! A binary min-heap of `(deadline, router index)` with each router's place in it kept, so that
//! moving one router's deadline (every advert a backup hears re-arms its master-down timer) is a
//! sift along one path of two vectors: O(log n) steps, no allocation, and for the single router
//! of a typical pair a compare or two. Ties go to the lower router index, so that the order is
//! the same on every run.

use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub(super) struct Deadlines {
    /// The heap: each entry is no later than its children at `2i + 1` and `2i + 2`.
    heap: Vec<(Instant, usize)>,
    /// Each router's place in `heap` (`None`: no deadline).
    place: Vec<Option<usize>>,
}

impl Deadlines {
    /// For `routers` routers, none with a deadline yet.
    pub(super) fn reset(&mut self, routers: usize) {
        self.heap.clear();
        self.place.clear();
        self.place.resize(routers, None);
    }

    /// The earliest deadline of all.
    pub(super) fn first(&self) -> Option<Instant> {
        self.heap.first().map(|(at, _)| *at)
    }

    /// `router`'s deadline as last set.
    #[cfg(test)]
    fn get(&self, router: usize) -> Option<Instant> {
        let place = (*self.place.get(router)?)?;
        Some(self.heap[place].0)
    }

    /// Sets `router`'s deadline (`None`: it has none); a router beyond [`Deadlines::reset`]'s
    /// count is ignored.
    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    pub(super) fn set(&mut self, router: usize, at: Option<Instant>) {
        let Some(&place) = self.place.get(router) else {
            return;
        };
        match (place, at) {
            (None, None) => {}
            (None, Some(at)) => {
                self.heap.push((at, router));
                self.place[router] = Some(self.heap.len() - 1);
                self.sift_up(self.heap.len() - 1);
            }
            (Some(place), Some(at)) => {
                let earlier = (at, router) < self.heap[place];
                self.heap[place].0 = at;
                match earlier {
                    true => self.sift_up(place),
                    false => self.sift_down(place),
                }
            }
            (Some(place), None) => {
                self.place[router] = None;
                let last = self.heap.pop().expect("a placed router is in the heap");
                if place < self.heap.len() {
                    // The last entry fills the hole, and moves whichever way it must.
                    self.heap[place] = last;
                    self.place[last.1] = Some(place);
                    self.sift_up(place);
                    self.sift_down(place);
                }
            }
        }
    }

    /// Appends the routers whose deadline is at or before `now` to `due`, earliest first.
    pub(super) fn due(&self, now: Instant, due: &mut Vec<usize>) {
        let start = due.len();
        // The heap's places, walked only below entries that are due (their children may be
        // too), gathered in `due` itself; turned into routers once sorted.
        if self.first().is_some_and(|at| at <= now) {
            due.push(0);
        }
        let mut next = start;
        while let Some(&place) = due.get(next) {
            next += 1;
            for child in [2 * place + 1, 2 * place + 2] {
                if self.heap.get(child).is_some_and(|(at, _)| *at <= now) {
                    due.push(child);
                }
            }
        }
        let found = &mut due[start..];
        found.sort_unstable_by_key(|place| self.heap[*place]);
        for place in found {
            *place = self.heap[*place].1;
        }
    }

    fn sift_up(&mut self, mut place: usize) {
        while place > 0 {
            let parent = (place - 1) / 2;
            if self.heap[parent] <= self.heap[place] {
                break;
            }
            self.swap(place, parent);
            place = parent;
        }
    }

    fn sift_down(&mut self, mut place: usize) {
        loop {
            let (left, right) = (2 * place + 1, 2 * place + 2);
            let mut least = place;
            if left < self.heap.len() && self.heap[left] < self.heap[least] {
                least = left;
            }
            if right < self.heap.len() && self.heap[right] < self.heap[least] {
                least = right;
            }
            if least == place {
                break;
            }
            self.swap(place, least);
            place = least;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.place[self.heap[a].1] = Some(a);
        self.place[self.heap[b].1] = Some(b);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Each step sets one router's deadline; after each, the heap must agree with a plain list.
    #[test]
    fn agrees_with_a_plain_list_through_every_change() {
        let t0 = crate::engine::tests_support::epoch();
        let routers = 9;
        let mut deadlines = Deadlines::default();
        deadlines.reset(routers);
        let mut plain: Vec<Option<Instant>> = vec![None; routers];
        // A fixed pseudo-random walk: sets, moves both ways, ties and removals.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let router = (state % routers as u64) as usize;
            let at = match (state >> 8) % 5 {
                0 => None,
                _ => Some(t0 + Duration::from_millis((state >> 16) % 20)),
            };
            deadlines.set(router, at);
            plain[router] = at;
            let earliest = plain.iter().flatten().min().copied();
            assert_eq!(deadlines.first(), earliest, "step {step}");
            for (router, at) in plain.iter().enumerate() {
                assert_eq!(deadlines.get(router), *at, "step {step}, router {router}");
            }
            let now = t0 + Duration::from_millis((state >> 24) % 20);
            let mut due = Vec::new();
            deadlines.due(now, &mut due);
            let mut expected: Vec<(Instant, usize)> = (plain.iter().enumerate())
                .filter_map(|(router, at)| Some(((*at)?, router)))
                .filter(|(at, _)| *at <= now)
                .collect();
            expected.sort();
            let expected: Vec<usize> = expected.into_iter().map(|(_, router)| router).collect();
            assert_eq!(due, expected, "step {step}");
        }
    }

    #[test]
    fn a_router_beyond_the_count_is_ignored() {
        let mut deadlines = Deadlines::default();
        deadlines.reset(1);
        deadlines.set(3, Some(crate::engine::tests_support::epoch()));
        assert_eq!(deadlines.first(), None);
        assert_eq!(deadlines.get(3), None);
    }
}
