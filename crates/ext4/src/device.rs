//! The data writer: region buffers, aligned for O_DIRECT, filled by any number of threads
//! and written by a thread of its own, with a small pool bounding the memory, and a flusher
//! keeping the device busy. The first error (a write, or a flush) is kept and reported when
//! the file system is finished.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Condvar, Mutex};

use crate::layout::BLOCK;
use crate::REGION_BLOCKS;

/// Data writes happen on a thread of their own, so that the threads filling buffers go on
/// decompressing while the device takes the last buffer: a direct write blocks until the
/// device has the bytes. Buffers come back to a small pool, which bounds the memory.
pub(crate) struct Io {
    jobs: Mutex<Option<mpsc::Sender<(Aligned, usize, u64)>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    flusher: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    pool: Arc<(Mutex<Pool>, Condvar)>,
}

struct Pool {
    free: Vec<Aligned>,
    allocated: usize,
    /// Writers made so far: each may hold one buffer while it fills its region, so the
    /// pool must have more than that many, or a writer could wait for ever.
    writers: usize,
    error: Option<io::Error>,
}

/// Region buffers beyond one per writer: what can be in flight to the device.
const IN_FLIGHT: usize = 4;

impl Io {
    pub(crate) fn start(direct: File, limit: u64) -> Io {
        let (tx, rx) = mpsc::channel::<(Aligned, usize, u64)>();
        let pool = Arc::new((
            Mutex::new(Pool {
                free: Vec::new(),
                allocated: 0,
                writers: 0,
                error: None,
            }),
            Condvar::new(),
        ));
        // A device may only accept writes into a cache (a loop device's backing file, a
        // disk's write cache) and take them for good at the final flush: flushing every
        // quarter second keeps that going while the data is still being produced.
        let (stop, stopped) = mpsc::channel::<()>();
        let flush_fd = direct.try_clone();
        let flushed = pool.clone();
        let flusher = std::thread::spawn(move || {
            let Ok(fd) = flush_fd else { return };
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_millis(250))
            {
                // The descriptor shares its file with the final flush's, and the kernel
                // reports a failed writeback once per file: keep it, or the final flush
                // would report success over lost data.
                if let Err(e) = fd.sync_data() {
                    let (lock, _) = &*flushed;
                    let e = err("flushing data to the device")(e);
                    lock.lock().unwrap().error.get_or_insert(e);
                }
            }
        });
        let back = pool.clone();
        let thread = std::thread::spawn(move || {
            for (mut buf, len, block) in rx {
                assert!(block * BLOCK + len as u64 <= limit);
                let res = direct
                    .write_all_at(&buf.as_mut()[..len], block * BLOCK)
                    .map_err(err(format_args!("writing data at block {block}")));
                let (lock, cv) = &*back;
                let mut p = lock.lock().unwrap();
                if let Err(e) = res {
                    p.error.get_or_insert(e);
                }
                p.free.push(buf);
                cv.notify_all();
            }
        });
        Io {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            flusher: Mutex::new(Some((stop, flusher))),
            pool,
        }
    }

    /// A free buffer, waiting for one if all are in flight.
    pub(crate) fn buffer(&self) -> io::Result<Aligned> {
        let (lock, cv) = &*self.pool;
        let mut p = lock.lock().unwrap();
        loop {
            if let Some(e) = p.error.take() {
                return Err(e);
            }
            if let Some(b) = p.free.pop() {
                return Ok(b);
            }
            if p.allocated < p.writers + IN_FLIGHT {
                p.allocated += 1;
                return Ok(Aligned::new((REGION_BLOCKS * BLOCK) as usize));
            }
            p = cv.wait(p).unwrap();
        }
    }

    /// Queues `len` bytes of `buf` for block `block`.
    pub(crate) fn submit(&self, buf: Aligned, len: usize, block: u64) -> io::Result<()> {
        let jobs = self.jobs.lock().unwrap();
        let tx = jobs.as_ref().expect("no writes after the data is finished");
        tx.send((buf, len, block))
            .map_err(|_| io::Error::other("the data writer thread is gone"))
    }

    /// Waits for every queued write; the first error, if any.
    /// One more writer may hold a buffer while it fills its region: the pool grows by one.
    pub(crate) fn add_writer(&self) {
        self.pool.0.lock().unwrap().writers += 1;
    }

    pub(crate) fn drain(&self) -> io::Result<()> {
        drop(self.jobs.lock().unwrap().take());
        if let Some(t) = self.thread.lock().unwrap().take() {
            t.join()
                .map_err(|_| io::Error::other("the data writer thread panicked"))?;
        }
        if let Some((stop, t)) = self.flusher.lock().unwrap().take() {
            drop(stop);
            let _ = t.join();
        }
        match self.pool.0.lock().unwrap().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

pub(crate) fn err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A 4096-aligned buffer, as `O_DIRECT` wants.
pub(crate) struct Aligned {
    ptr: *mut u8,
    len: usize,
}

// Safety: the buffer is owned memory like a Vec<u8>.
unsafe impl Send for Aligned {}

impl Aligned {
    pub(crate) fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, BLOCK as usize).expect("layout");
        // Safety: len is non-zero.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory for a {len}-byte buffer");
        Aligned { ptr, len }
    }
    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        // Safety: ptr is valid for len bytes and uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, BLOCK as usize).unwrap();
        // Safety: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}
