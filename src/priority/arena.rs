//! The waiting room's storage: a few first-in-first-out lists (one per
//! priority) threaded through one arena, so that any waiter leaves in O(1)
//! by its key, whatever its place.
//!
//! Each place in the arena holds a value and its neighbours in its list
//! (a doubly linked list by index). A value's key is its place's index and
//! the place's generation, which changes whenever the place is vacated, so
//! an old key never reaches a later value. Vacated places are kept on a free
//! list and reused: the arena is as large as the most values ever held at
//! once.

/// No place: the end of a list.
const NIL: u32 = u32::MAX;

/// One place: a value (while occupied), its neighbours, its generation.
struct Place<T> {
    value: Option<T>,
    /// Bumped when the place is vacated.
    generation: u32,
    /// The list the value is in.
    list: u8,
    prev: u32,
    /// The next place in the list, or on the free list while vacant.
    next: u32,
}

/// The ends and length of one list.
#[derive(Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
    len: usize,
}

/// `N` first-in-first-out lists of values in one arena, with removal by key
/// in O(1).
pub(super) struct Arena<T, const N: usize> {
    places: Vec<Place<T>>,
    /// The first vacant place, the rest linked through `next`.
    free: u32,
    lists: [Ends; N],
    len: usize,
}

impl<T, const N: usize> Default for Arena<T, N> {
    fn default() -> Self {
        Self {
            places: Vec::new(),
            free: NIL,
            lists: [Ends {
                head: NIL,
                tail: NIL,
                len: 0,
            }; N],
            len: 0,
        }
    }
}

/// A key: the place's generation (high half) and index (low half).
fn key(index: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(index)
}

impl<T, const N: usize> Arena<T, N> {
    /// How many values the lists hold together.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// How many values `list` holds.
    pub(super) fn list_len(&self, list: usize) -> usize {
        self.lists[list].len
    }

    /// Append `value` to `list`; its key.
    pub(super) fn push_back(&mut self, list: usize, value: T) -> u64 {
        let tail = self.lists[list].tail;
        let index = match self.free {
            NIL => {
                let index = u32::try_from(self.places.len())
                    .ok()
                    .filter(|i| *i != NIL)
                    .expect("fewer than 2^32 - 1 values at once");
                self.places.push(Place {
                    value: None,
                    generation: 0,
                    list: 0,
                    prev: NIL,
                    next: NIL,
                });
                index
            }
            free => {
                self.free = self.places[free as usize].next;
                free
            }
        };
        let place = &mut self.places[index as usize];
        *place = Place {
            value: Some(value),
            generation: place.generation,
            list: list as u8,
            prev: tail,
            next: NIL,
        };
        let key = key(index, place.generation);
        match tail {
            NIL => self.lists[list].head = index,
            tail => self.places[tail as usize].next = index,
        }
        self.lists[list].tail = index;
        self.lists[list].len += 1;
        self.len += 1;
        key
    }

    /// Every value held, in no particular order.
    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.places.iter().filter_map(|place| place.value.as_ref())
    }

    /// The oldest value of `list`.
    pub(super) fn front(&self, list: usize) -> Option<&T> {
        let head = self.lists[list].head;
        self.places.get(head as usize)?.value.as_ref()
    }

    /// The newest value of `list`.
    pub(super) fn back(&self, list: usize) -> Option<&T> {
        let tail = self.lists[list].tail;
        self.places.get(tail as usize)?.value.as_ref()
    }

    /// Take the oldest value of `list`.
    pub(super) fn pop_front(&mut self, list: usize) -> Option<T> {
        self.take(self.lists[list].head)
    }

    /// Take the newest value of `list`.
    pub(super) fn pop_back(&mut self, list: usize) -> Option<T> {
        self.take(self.lists[list].tail)
    }

    /// Take the value under `key`, if it is still here.
    pub(super) fn remove(&mut self, key: u64) -> Option<T> {
        let (index, generation) = (key as u32, (key >> 32) as u32);
        match self.places.get(index as usize) {
            Some(place) if place.generation == generation => self.take(index),
            _ => None,
        }
    }

    /// Unlink the value at `index` from its list and vacate its place.
    fn take(&mut self, index: u32) -> Option<T> {
        let place = self.places.get_mut(index as usize)?;
        let value = place.value.take()?;
        let (list, prev, next) = (usize::from(place.list), place.prev, place.next);
        place.generation = place.generation.wrapping_add(1);
        place.next = self.free;
        self.free = index;
        match prev {
            NIL => self.lists[list].head = next,
            prev => self.places[prev as usize].next = next,
        }
        match next {
            NIL => self.lists[list].tail = prev,
            next => self.places[next as usize].prev = prev,
        }
        self.lists[list].len -= 1;
        self.len -= 1;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    fn drain_front<const N: usize>(arena: &mut Arena<u32, N>, list: usize) -> Vec<u32> {
        std::iter::from_fn(|| arena.pop_front(list)).collect()
    }

    #[test]
    fn values_leave_from_anywhere_and_the_rest_keep_their_order() {
        let mut arena = Arena::<u32, 2>::default();
        let keys: Vec<u64> = (0..6).map(|v| arena.push_back(v as usize % 2, v)).collect();
        // list 0 holds 0, 2, 4; list 1 holds 1, 3, 5
        assert_eq!(arena.remove(keys[2]), Some(2));
        assert_eq!(arena.remove(keys[5]), Some(5));
        // gone already
        assert_eq!(arena.remove(keys[2]), None);
        assert_eq!(
            (arena.len(), arena.list_len(0), arena.list_len(1)),
            (4, 2, 2)
        );
        assert_eq!(arena.front(1), Some(&1));
        assert_eq!(arena.pop_back(1), Some(3));
        assert_eq!(drain_front(&mut arena, 0), [0, 4]);
        assert_eq!(drain_front(&mut arena, 1), [1]);
        assert_eq!(arena.pop_back(1), None);
        assert_eq!((arena.len(), arena.front(0)), (0, None));
    }

    #[test]
    fn an_old_key_never_reaches_a_later_value() {
        let mut arena = Arena::<u32, 1>::default();
        let old = arena.push_back(0, 1);
        assert_eq!(arena.pop_front(0), Some(1));
        // the same place, a new generation
        let new = arena.push_back(0, 2);
        assert_eq!(new as u32, old as u32);
        assert_eq!(arena.remove(old), None);
        assert_eq!(arena.remove(u64::from(u32::MAX - 1)), None);
        assert_eq!(arena.remove(new), Some(2));
    }

    #[test]
    fn removal_in_every_order_empties_the_arena_and_its_room_is_reused() {
        let n = 1_000;
        let orders: [Vec<usize>; 4] = [
            (0..n).collect(),
            (0..n).rev().collect(),
            // from the middle outwards
            (0..n)
                .map(|i| {
                    if i % 2 == 0 {
                        n / 2 + i / 2
                    } else {
                        n / 2 - 1 - i / 2
                    }
                })
                .collect(),
            (0..n).map(|i| i * 7919 % n).collect(),
        ];
        let mut arena = Arena::<u32, 3>::default();
        for order in orders {
            let keys: Vec<u64> = (0..n as u32).map(|v| arena.push_back(0, v)).collect();
            for (removed, i) in order.into_iter().enumerate() {
                assert_eq!(arena.remove(keys[i]), Some(i as u32));
                assert_eq!(arena.list_len(0), n - removed - 1);
            }
            assert_eq!((arena.len(), arena.front(0)), (0, None));
            // every round fits in the places the first one made
            assert_eq!(arena.places.len(), n);
        }
    }

    proptest! {
        /// Any mix of arrivals, departures from either end and removals by
        /// key, over three lists, behaves as three double-ended queues.
        #[test]
        fn an_arena_is_three_queues(ops in proptest::collection::vec((0u8..4, 0usize..3, any::<u16>()), 0..400)) {
            let mut arena = Arena::<u16, 3>::default();
            let mut model: [VecDeque<(u64, u16)>; 3] = Default::default();
            let mut keys = Vec::new();
            for (op, list, pick) in ops {
                match op {
                    0 | 1 => {
                        let key = arena.push_back(list, pick);
                        model[list].push_back((key, pick));
                        keys.push(key);
                    }
                    2 => {
                        let (got, expected) = if pick % 2 == 0 {
                            (arena.pop_front(list), model[list].pop_front())
                        } else {
                            (arena.pop_back(list), model[list].pop_back())
                        };
                        prop_assert_eq!(got, expected.map(|(_, v)| v));
                    }
                    _ if !keys.is_empty() => {
                        let key = keys[usize::from(pick) % keys.len()];
                        let expected = model.iter_mut().find_map(|m| {
                            let at = m.iter().position(|(k, _)| *k == key)?;
                            m.remove(at).map(|(_, v)| v)
                        });
                        prop_assert_eq!(arena.remove(key), expected);
                    }
                    _ => {}
                }
                for (list, m) in model.iter().enumerate() {
                    prop_assert_eq!(arena.list_len(list), m.len());
                    prop_assert_eq!(arena.front(list), m.front().map(|(_, v)| v));
                }
                prop_assert_eq!(arena.len(), model.iter().map(VecDeque::len).sum::<usize>());
            }
            for (list, m) in model.iter().enumerate() {
                let rest: Vec<u16> = std::iter::from_fn(|| arena.pop_front(list)).collect();
                prop_assert_eq!(rest, m.iter().map(|(_, v)| *v).collect::<Vec<_>>());
            }
        }
    }
}
