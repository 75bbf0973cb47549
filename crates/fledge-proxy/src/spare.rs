//! Read buffers and header maps kept between requests by each worker thread.
//!
//! A connection holds no buffer while it waits for its next request (hundreds of
//! idle keep-alive connections would otherwise hold one each). Without a store of
//! emptied buffers, that made every request allocate and free two: one for the
//! client's head, one for the upstream's response. A worker thread now keeps up to
//! [`KEEP`] emptied buffers of each kind and hands them to the next reads, the way
//! HAProxy's and nginx's buffer pools do, so a busy proxy allocates none per
//! request while an idle one holds at most about 1.5 MiB per worker.
//!
//! Header maps likewise: each head read (a client's request, an upstream's
//! response) is made into an `http::HeaderMap`, two allocations each. Once a head
//! has been written on, its map is emptied and kept for the next head read.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;
use http::HeaderMap;

/// How many emptied buffers (and header maps) of one kind a worker thread keeps.
/// A worker serving 256 busy connections has up to that many requests in flight:
/// with room for only 64, half a map and a quarter of a buffer were allocated and
/// freed again per request (callgrind), about 2% of the proxy's CPU.
const KEEP: usize = 256;

/// One kind of kept buffer: a size and the thread's list of them.
#[derive(Debug)]
pub(crate) struct Spares {
    /// What a kept buffer holds. One that has grown to twice this (a large body was
    /// read into it) goes back to the allocator instead.
    size: usize,
    list: RefCell<Vec<BytesMut>>,
}

thread_local! {
    /// Buffers for the first read of a client's request head.
    pub(crate) static CLIENT: Spares = const { Spares::new(1024) };
    /// Buffers for reading an upstream's response.
    pub(crate) static UPSTREAM: Spares = const { Spares::new(4 * 1024) };
}

/// Gives `buf` room for `want` more bytes: an empty buffer with no room (a
/// connection between requests) takes a kept one of `kind`, or a new one.
pub(crate) fn room(kind: &'static LocalKey<Spares>, buf: &mut BytesMut, want: usize) {
    if buf.capacity() == 0 {
        *buf = kind.with(|s| s.take(want));
    } else {
        buf.reserve(want);
    }
}

/// Keeps `buf` for another read of `kind` on this thread; a buffer still holding
/// bytes is dropped.
pub(crate) fn keep(kind: &'static LocalKey<Spares>, buf: BytesMut) {
    if buf.is_empty() {
        kind.with(|s| s.give(buf));
    }
}

/// A map laid out for more fields than this goes back to the allocator.
const MAP_FIELDS: usize = 32;

thread_local! {
    /// Emptied header maps.
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// A header map with room for `fields` fields: a kept one, or a new one.
pub(crate) fn header_map(fields: usize) -> HeaderMap {
    match MAPS.with(|maps| maps.borrow_mut().pop()) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Keeps `map`, emptied at once (so that the bytes its values share are free
/// again), for another head read on this thread.
pub(crate) fn keep_map(mut map: HeaderMap) {
    if map.capacity() > MAP_FIELDS {
        return;
    }
    map.clear();
    MAPS.with(|maps| {
        let mut maps = maps.borrow_mut();
        if maps.len() < KEEP {
            maps.push(map);
        }
    });
}

// === impl Spares ===

impl Spares {
    const fn new(size: usize) -> Self {
        Self {
            size,
            list: RefCell::new(Vec::new()),
        }
    }

    fn take(&self, want: usize) -> BytesMut {
        if want <= self.size {
            while let Some(mut buf) = self.list.borrow_mut().pop() {
                if self.grown(&mut buf) {
                    continue;
                }
                // Once the bytes taken out of it are gone the whole buffer is free
                // again; until then only its unused end is.
                if buf.try_reclaim(want) {
                    return buf;
                }
            }
        }
        BytesMut::with_capacity(want)
    }

    fn give(&self, mut buf: BytesMut) {
        if self.grown(&mut buf) {
            return;
        }
        let mut list = self.list.borrow_mut();
        if list.len() < KEEP {
            list.push(buf);
        }
    }

    /// Whether `buf` (empty) has room for twice the kind's size, or could have once
    /// the bytes taken out of it are gone: too large to keep.
    fn grown(&self, buf: &mut BytesMut) -> bool {
        buf.try_reclaim(2 * self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn a_kept_buffer_serves_the_next_read_once_its_bytes_are_gone() {
        let spares = Spares::new(1024);
        let mut buf = spares.take(1024);
        buf.put_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split().freeze();
        let at = buf.as_ptr();
        spares.give(buf);
        drop(head);
        let buf = spares.take(1024);
        assert!(buf.capacity() >= 1024);
        // The same allocation, from its start.
        assert_eq!(buf.as_ptr(), at.wrapping_sub(18));
        assert!(spares.list.borrow().is_empty());
    }

    #[test]
    fn a_buffer_still_shared_is_used_only_for_its_free_end() {
        let spares = Spares::new(1024);
        let mut buf = spares.take(1024);
        buf.put_slice(&[b'x'; 1000]);
        let held = buf.split().freeze();
        let free_end = buf.as_ptr();
        spares.give(buf);
        // 24 bytes are free: enough for a read of 16, from where they start.
        let small = spares.take(16);
        assert_eq!(small.as_ptr(), free_end);
        spares.give(small);
        // Not enough for 1024, and the rest is still held: a new buffer.
        let fresh = spares.take(1024);
        assert!(fresh.capacity() >= 1024);
        assert_ne!(fresh.as_ptr(), free_end);
        assert!(spares.list.borrow().is_empty());
        drop(held);
    }

    #[test]
    fn grown_buffers_go_back_to_the_allocator_and_the_list_is_bounded() {
        let spares = Spares::new(1024);
        spares.give(BytesMut::with_capacity(64 * 1024));
        assert!(spares.list.borrow().is_empty());
        for _ in 0..KEEP + 10 {
            spares.give(BytesMut::with_capacity(1024));
        }
        assert_eq!(spares.list.borrow().len(), KEEP);
        // A read wanting more than the kind's size never takes a kept buffer.
        let big = spares.take(4096);
        assert!(big.capacity() >= 4096);
        assert_eq!(spares.list.borrow().len(), KEEP);
    }

    #[test]
    fn a_kept_map_comes_back_empty_and_its_values_let_go() {
        let kept = || MAPS.with(|maps| maps.borrow().len());
        let mut buf = BytesMut::from(&b"v"[..]);
        let value = buf.split().freeze();
        let mut map = header_map(6);
        map.insert(
            http::header::HOST,
            http::HeaderValue::from_maybe_shared(value).unwrap(),
        );
        keep_map(map);
        assert_eq!(kept(), 1);
        // The value's bytes are no longer shared.
        assert!(buf.try_reclaim(1));
        let map = header_map(6);
        assert_eq!(kept(), 0, "the kept map is the one handed out");
        assert!(map.is_empty() && map.capacity() >= 6);
        let mut big = HeaderMap::with_capacity(4 * MAP_FIELDS);
        big.insert(http::header::HOST, http::HeaderValue::from_static("a"));
        keep_map(big);
        assert_eq!(kept(), 0, "a map laid out for many fields is not kept");
    }

    #[test]
    fn room_takes_a_kept_buffer_only_for_an_empty_one() {
        let kept = || CLIENT.with(|s| s.list.borrow().len());
        let mut buf = BytesMut::new();
        room(&CLIENT, &mut buf, 1024);
        assert!(buf.capacity() >= 1024);
        let first = buf.as_ptr();
        keep(&CLIENT, buf);
        assert_eq!(kept(), 1);
        // An empty buffer without room takes the kept one.
        let mut buf = BytesMut::new();
        room(&CLIENT, &mut buf, 1024);
        assert_eq!((buf.as_ptr(), kept()), (first, 0));
        // One with bytes in it grows itself and keeps them.
        buf.put_slice(b"abc");
        room(&CLIENT, &mut buf, 4096);
        assert!(buf.capacity() - buf.len() >= 4096);
        assert_eq!(&buf[..], b"abc");
        // Not empty: not kept.
        keep(&CLIENT, buf);
        assert_eq!(kept(), 0);
    }
}
