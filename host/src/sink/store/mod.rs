//! Where lake objects are stored, chosen by URL: `file:///path` (or a plain path; the offline
//! default) or `gs://bucket/prefix` (Google Cloud Storage through the official client).
//!
//! A store puts whole objects (a reader never sees half of one: a temporary file + fsync + rename
//! locally, a single- or resumable upload on GCS), lists names under a prefix and reads objects
//! back. Names are relative to the lake's root (`stock-stream/dt=…/hour=…/…ndjson`).

mod gcs;

pub use gcs::GcsStore;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable the Google clients read to reach an emulator.
pub const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";
pub(crate) const GCS_ENDPOINT: &str = "https://storage.googleapis.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    Local(PathBuf),
    Gcs { bucket: String, prefix: String },
}

impl LakeLocation {
    /// `file:///abs/path`, `gs://bucket[/prefix]`, or a plain filesystem path.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{text:?}: no bucket in the gs:// URL"));
            }
            return Ok(Self::Gcs {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            if path.is_empty() {
                return Err(format!("{text:?}: no path in the file:// URL"));
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: the lake is a directory, file:///path or gs://bucket/prefix"
            ));
        }
        if text.is_empty() {
            return Err("the lake location is empty".into());
        }
        Ok(Self::Local(PathBuf::from(text)))
    }
}

impl std::fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => write!(f, "file://{}", p.display()),
            Self::Gcs { bucket, prefix } if prefix.is_empty() => write!(f, "gs://{bucket}"),
            Self::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lake object {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gs://{bucket}/{object}: {message}")]
    Gcs {
        bucket: String,
        object: String,
        message: String,
    },
    #[error("connecting to Cloud Storage: {0}")]
    Connect(String),
}

/// How to reach GCS: the endpoint (an emulator's, or none for Google's), and the threshold above
/// which uploads are resumable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcsOptions {
    pub endpoint: Option<String>,
    pub resumable_threshold: usize,
}

impl GcsOptions {
    /// The configured endpoint, else `STORAGE_EMULATOR_HOST` (`host:port` or a URL).
    pub fn endpoint_or_env(mut self) -> Self {
        if self.endpoint.as_deref().is_none_or(str::is_empty) {
            self.endpoint = std::env::var(EMULATOR_ENV).ok().filter(|v| !v.is_empty());
        }
        self.endpoint = self.endpoint.map(|e| {
            let e = e.trim_end_matches('/');
            if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            }
        });
        self
    }
}

/// Spilled pieces are whole multiples of this (a spool file written with direct I/O takes whole
/// blocks, except its last write).
pub const SPILL_ALIGN: usize = 4096;

/// A piece of work for the spool files, in the order the lake writer made it
/// ([`crate::sink::lake`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolOp {
    /// Append `bytes` (a multiple of [`SPILL_ALIGN`]) to the spool file `spool`, creating it.
    Append { spool: String, bytes: Vec<u8> },
    /// The segment was discarded (its partition revoked): remove the spool file.
    Discard { spool: String },
}

pub enum LakeStore {
    Local(LocalStore),
    Gcs(Box<GcsStore>),
}

/// A directory, and the thread that writes its segments' spool files.
pub struct LocalStore {
    root: PathBuf,
    spooler: tokio::sync::mpsc::Sender<SpoolCommand>,
}

impl LakeStore {
    pub async fn open(location: &LakeLocation, gcs: GcsOptions) -> Result<Self, StoreError> {
        Ok(match location {
            LakeLocation::Local(root) => Self::Local(LocalStore {
                root: root.clone(),
                spooler: Spooler::start(root.clone())?,
            }),
            LakeLocation::Gcs { bucket, prefix } => {
                Self::Gcs(Box::new(GcsStore::connect(bucket, prefix, gcs).await?))
            }
        })
    }

    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            // A file's write and fsync block: on the blocking pool, not a runtime worker.
            Self::Local(local) => {
                let path = local.root.join(name);
                let (root, name) = (local.root.clone(), name.to_string());
                match tokio::task::spawn_blocking(move || put_local(&root, &name, &bytes)).await {
                    Ok(stored) => stored,
                    Err(e) => Err(StoreError::Io {
                        path,
                        source: std::io::Error::other(e.to_string()),
                    }),
                }
            }
            Self::Gcs(gcs) => gcs.put(name, bytes).await,
        }
    }

    /// Whether segments may spill to spool files here (a directory; not GCS, whose objects are
    /// uploaded whole).
    pub fn spools(&self) -> bool {
        matches!(self, Self::Local(_))
    }

    /// Hands spool work to the spool thread, in order; waits while it is [`SPOOL_QUEUE`] behind.
    /// A failed write is reported when its segment is stored ([`LakeStore::put_segment`]), as is
    /// spool work given to a store that does not spool.
    pub async fn spool(&self, op: SpoolOp) {
        if let Self::Local(local) = self {
            // The thread only stops with the store.
            let _ = local.spooler.send(SpoolCommand::Op(op)).await;
        }
    }

    /// Stores a rolled segment: its spool file (if it spilled) followed by `tail`, as `name`.
    pub async fn put_segment(
        &self,
        name: &str,
        spool: Option<String>,
        tail: Vec<u8>,
    ) -> Result<(), StoreError> {
        let Some(spool) = spool else {
            return self.put(name, tail).await;
        };
        let Self::Local(local) = self else {
            return Err(StoreError::Io {
                path: PathBuf::from(name),
                source: std::io::Error::other(format!(
                    "its first bytes are in spool file {spool}, and this store keeps none"
                )),
            });
        };
        let (done, stored) = tokio::sync::oneshot::channel();
        let seal = SpoolCommand::Seal {
            spool,
            name: name.to_string(),
            tail,
            done,
        };
        let gone = || StoreError::Io {
            path: local.root.join(name),
            source: std::io::Error::other("the lake's spool thread stopped"),
        };
        local.spooler.send(seal).await.map_err(|_| gone())?;
        stored.await.map_err(|_| gone())?
    }

    /// Removes a crash's leftovers under `prefix` in a directory: temporary and spool files not
    /// written for `older_than` (GCS has none: its objects appear whole). Returns how many.
    pub async fn sweep_leftovers(&self, prefix: &str, older_than: std::time::Duration) -> usize {
        let Self::Local(local) = self else {
            return 0;
        };
        let (root, prefix) = (local.root.clone(), prefix.to_string());
        tokio::task::spawn_blocking(move || sweep_local(&root, &prefix, older_than))
            .await
            .unwrap_or(0)
    }

    /// Object names under `prefix` (relative to the lake root), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = match self {
            Self::Local(local) => list_local(&local.root, prefix)?,
            Self::Gcs(gcs) => gcs.list(prefix).await?,
        };
        names.sort();
        Ok(names)
    }

    /// Deletes one object.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Self::Local(local) => {
                let path = local.root.join(name);
                std::fs::remove_file(&path).map_err(|source| StoreError::Io { path, source })
            }
            Self::Gcs(gcs) => gcs.delete(name).await,
        }
    }

    pub async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        match self {
            Self::Local(local) => {
                let path = local.root.join(name);
                std::fs::read(&path).map_err(|source| StoreError::Io { path, source })
            }
            Self::Gcs(gcs) => gcs.get(name).await,
        }
    }
}

fn put_local(root: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let path = root.join(name);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| io(std::io::ErrorKind::InvalidInput.into()))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let file_name = path
        .file_name()
        .expect("object names end in a file name")
        .to_string_lossy();
    let tmp = dir.join(crate::sink::layout::temp_file(&file_name));
    let mut file = ObjectFile::create(&tmp).map_err(io)?;
    file.append(bytes).map_err(io)?;
    file.finish().map_err(io)?;
    publish(&tmp, &path).map_err(io)
}

/// Renames a finished temporary file into place and makes the rename durable.
fn publish(tmp: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(tmp, path)?;
    let dir = path.parent().expect("object paths have a directory");
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Direct writes are aligned to this (address, length and file offset): the page size, a multiple
/// of every logical block size Linux file systems use. Spilled pieces are whole blocks of it.
const DIRECT_ALIGN: usize = SPILL_ALIGN;
/// Direct writes go through one aligned buffer of this size per thread.
const DIRECT_CHUNK: usize = 1 << 20;

thread_local! {
    /// The aligned buffer's backing `Vec`, allocated once per thread and reused: its pages stay
    /// warm (first-touched pages are what made the page cache's copy slow on this VM).
    static DIRECT_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A lake object being written to a temporary file: with `O_DIRECT` where the file system takes
/// it, else through the page cache.
///
/// Why direct: a lake object is written once and never read back by this process, and the page
/// cache's copy of it was the largest single cost of the host at 20,000 ticks/s
/// (`copy_folio_from_iter`, 18 % of its samples; BENCHMARKS.md). A direct write hands the device
/// an aligned buffer: no copy into the page cache, and the lake does not grow the page cache.
/// Every write but the last must be whole blocks; the last is padded with zeros, and
/// [`ObjectFile::finish`] cuts the file to its length before anyone can see it (temporary name).
struct ObjectFile {
    file: std::fs::File,
    /// Bytes of the object written (without padding).
    len: u64,
    direct: bool,
    /// A write that was not whole blocks happened: no more may follow it.
    padded: bool,
}

impl ObjectFile {
    fn create(path: &Path) -> std::io::Result<Self> {
        let (file, direct) = match open_direct(path)? {
            Some(file) => (file, true),
            None => (std::fs::File::create(path)?, false),
        };
        Ok(Self {
            file,
            len: 0,
            direct,
            padded: false,
        })
    }

    /// Appends `bytes`: whole blocks of [`DIRECT_ALIGN`], except for the last append.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.padded {
            return Err(std::io::Error::other(
                "an object file was appended to after its last, partial block",
            ));
        }
        if !self.direct {
            self.file.write_all(bytes)?;
            self.len += bytes.len() as u64;
            return Ok(());
        }
        let file = &mut self.file;
        DIRECT_BUFFER.with_borrow_mut(|backing| {
            if backing.len() < DIRECT_CHUNK + DIRECT_ALIGN {
                backing.resize(DIRECT_CHUNK + DIRECT_ALIGN, 0);
            }
            let start = backing.as_ptr().align_offset(DIRECT_ALIGN);
            let chunk = &mut backing[start..start + DIRECT_CHUNK];
            for piece in bytes.chunks(DIRECT_CHUNK) {
                let padded = piece.len().next_multiple_of(DIRECT_ALIGN);
                chunk[..piece.len()].copy_from_slice(piece);
                chunk[piece.len()..padded].fill(0);
                file.write_all(&chunk[..padded])?;
            }
            Ok::<_, std::io::Error>(())
        })?;
        self.len += bytes.len() as u64;
        self.padded = !bytes.len().is_multiple_of(DIRECT_ALIGN);
        Ok(())
    }

    /// Cuts the padding off and makes the file durable.
    fn finish(self) -> std::io::Result<()> {
        if self.direct {
            self.file.set_len(self.len)?;
        }
        self.file.sync_all()
    }
}

/// A new file opened for direct writes; `None` where the file system refuses them (tmpfs, some
/// network file systems).
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> std::io::Result<Option<std::fs::File>> {
    Ok(None)
}

/// Spool commands the store's queue holds at most (each append is up to `spill_bytes`): the
/// memory a slow disk can make the run loop hold before it waits.
pub const SPOOL_QUEUE: usize = 4;

enum SpoolCommand {
    Op(SpoolOp),
    /// The segment rolled: append `tail`, finish the file and rename it to `name`.
    Seal {
        spool: String,
        name: String,
        tail: Vec<u8>,
        done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The thread that writes spool files, one command at a time in the order they were sent (a
/// segment's pieces, then its seal). A spool file is `.<partition>-<n>.spool.<run>` beside the
/// object it becomes (the same directory, so the rename is atomic); `<run>` tells this process's
/// files from another's in a shared lake. A crash leaves them behind; readers and listings skip
/// names starting with a dot.
struct Spooler {
    root: PathBuf,
    run: String,
    open: std::collections::HashMap<String, SpoolFile>,
}

struct SpoolFile {
    path: PathBuf,
    /// The first write error; the seal reports it.
    file: std::io::Result<ObjectFile>,
}

impl Spooler {
    fn start(root: PathBuf) -> Result<tokio::sync::mpsc::Sender<SpoolCommand>, StoreError> {
        let (sender, mut commands) = tokio::sync::mpsc::channel(SPOOL_QUEUE);
        let mut spooler = Self {
            root: root.clone(),
            run: format!("{:016x}", crate::random_u64()),
            open: Default::default(),
        };
        std::thread::Builder::new()
            .name("lake-spool".into())
            .spawn(move || {
                while let Some(command) = commands.blocking_recv() {
                    spooler.handle(command);
                }
                spooler.abandon();
            })
            .map_err(|source| StoreError::Io { path: root, source })?;
        Ok(sender)
    }

    fn handle(&mut self, command: SpoolCommand) {
        match command {
            SpoolCommand::Op(SpoolOp::Append { spool, bytes }) => {
                let file = self.file(&spool);
                if let Ok(f) = &mut file.file
                    && let Err(e) = f.append(&bytes)
                {
                    file.file = Err(e);
                }
            }
            SpoolCommand::Op(SpoolOp::Discard { spool }) => {
                if let Some(file) = self.open.remove(&spool) {
                    let _ = std::fs::remove_file(file.path);
                }
            }
            SpoolCommand::Seal {
                spool,
                name,
                tail,
                done,
            } => {
                let path = self.root.join(&name);
                let sealed = match self.open.remove(&spool) {
                    Some(file) => Self::seal(file, &tail, &path),
                    None => Err(std::io::Error::other(format!(
                        "its spool file {spool} was never written"
                    ))),
                };
                let _ = done.send(sealed.map_err(|source| StoreError::Io { path, source }));
            }
        }
    }

    /// The spool file for `spool`, created on its first piece.
    fn file(&mut self, spool: &str) -> &mut SpoolFile {
        let path = self
            .root
            .join(crate::sink::layout::spool_file(spool, &self.run));
        self.open.entry(spool.to_string()).or_insert_with(|| {
            let created = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| ObjectFile::create(&path));
            SpoolFile {
                path,
                file: created,
            }
        })
    }

    fn seal(file: SpoolFile, tail: &[u8], path: &Path) -> std::io::Result<()> {
        let written = file.file.and_then(|mut f| {
            f.append(tail)?;
            f.finish()
        });
        match written {
            Ok(()) => publish(&file.path, path),
            Err(e) => {
                let _ = std::fs::remove_file(&file.path);
                Err(e)
            }
        }
    }

    /// The store is gone (the run ended): segments never sealed are not objects.
    fn abandon(&mut self) {
        for (_, file) in self.open.drain() {
            let _ = std::fs::remove_file(file.path);
        }
    }
}

/// Removes the temporary and spool files under `root/prefix` that were last written before
/// `older_than` ago: a crash's leftovers (a live host writes its spool files at least once a
/// segment's age, and renames its temporary files within one store). Returns how many went.
fn sweep_local(root: &Path, prefix: &str, older_than: std::time::Duration) -> usize {
    let mut removed = 0;
    // A directory that cannot be read is left as it is: the listing that follows reports it.
    let _ = walk_files(&root.join(prefix), |entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = crate::sink::layout::is_leftover(&name);
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age >= older_than);
        if leftover && stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    });
    removed
}

/// Every file under `root/prefix`, skipping temporary files (a crash can leave `.…tmp` behind).
fn list_local(root: &Path, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    walk_files(&root.join(prefix), |entry| {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with('.')
            && let Ok(rel) = path.strip_prefix(root)
        {
            names.push(rel.to_string_lossy().replace('\\', "/"));
        }
    })?;
    Ok(names)
}

/// Visits every file under `top`, depth first; a directory that does not exist has none.
fn walk_files(top: &Path, mut visit: impl FnMut(&std::fs::DirEntry)) -> Result<(), StoreError> {
    let mut dirs = vec![top.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StoreError::Io { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            if entry.path().is_dir() {
                dirs.push(entry.path());
            } else {
                visit(&entry);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_from_urls_and_paths() {
        assert_eq!(
            LakeLocation::parse("gs://bucket/a/b/").unwrap(),
            LakeLocation::Gcs {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            LakeLocation::parse("gs://bucket").unwrap(),
            LakeLocation::Gcs {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            LakeLocation::parse("file:///tmp/lake").unwrap(),
            LakeLocation::Local("/tmp/lake".into())
        );
        assert_eq!(
            LakeLocation::parse("lake").unwrap(),
            LakeLocation::Local("lake".into())
        );
        assert!(LakeLocation::parse("s3://x").is_err());
        assert!(LakeLocation::parse("gs://").is_err());
        assert_eq!(
            LakeLocation::parse("gs://b/p").unwrap().to_string(),
            "gs://b/p"
        );
    }

    async fn local_store(root: &Path) -> LakeStore {
        LakeStore::open(
            &LakeLocation::Local(root.to_path_buf()),
            GcsOptions::default(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn local_store_puts_lists_and_reads_whole_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).await;
        store
            .put("t/dt=2017-06-20/hour=07/0-1-2.ndjson", b"a\nb\n".to_vec())
            .await
            .unwrap();
        store
            .put("t/dt=2017-06-20/hour=08/1-3-3.ndjson", b"c\n".to_vec())
            .await
            .unwrap();
        std::fs::write(dir.path().join("t/dt=2017-06-20/hour=07/.x.tmp"), "junk").unwrap();
        assert_eq!(
            store.list("t").await.unwrap(),
            [
                "t/dt=2017-06-20/hour=07/0-1-2.ndjson",
                "t/dt=2017-06-20/hour=08/1-3-3.ndjson"
            ]
        );
        assert_eq!(
            store
                .get("t/dt=2017-06-20/hour=07/0-1-2.ndjson")
                .await
                .unwrap(),
            b"a\nb\n"
        );
        assert!(store.list("missing").await.unwrap().is_empty());
    }

    fn dot_files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    /// Objects of every length around the direct writes' block and chunk edges come back exactly,
    /// with no padding and no temporary file left; the one thread's reused buffer leaks nothing
    /// from one object into the next.
    #[test]
    fn local_objects_are_exact_at_every_block_and_chunk_edge() {
        let dir = tempfile::tempdir().unwrap();
        let lengths = [
            0,
            1,
            DIRECT_ALIGN - 1,
            DIRECT_ALIGN,
            DIRECT_ALIGN + 1,
            DIRECT_CHUNK - 1,
            DIRECT_CHUNK,
            2 * DIRECT_CHUNK + 17,
            5,
        ];
        for (i, &len) in lengths.iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8 | 1).collect();
            let name = format!("t/hour=07/{i}-{len}.ndjson");
            put_local(dir.path(), &name, &bytes).unwrap();
            let back = std::fs::read(dir.path().join(&name)).unwrap();
            assert_eq!(back.len(), len, "length {len}");
            assert!(back == bytes, "content of length {len}");
        }
        assert_eq!(
            dot_files(&dir.path().join("t/hour=07")),
            Vec::<String>::new()
        );
    }

    /// This machine's file system takes direct writes; the test says so, so that a fall back to
    /// the page cache does not pass unnoticed where direct writes are expected.
    #[cfg(target_os = "linux")]
    #[test]
    fn direct_writes_are_taken_on_ext4_and_xfs() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let file = ObjectFile::create(&dir.path().join("x")).unwrap();
        let fs = std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(dir.path())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if fs == "ext2/ext3" || fs == "xfs" {
            assert!(file.direct, "{fs} takes O_DIRECT");
        }
    }

    /// A spilled segment's object is its pieces then its tail, renamed into place; a discarded
    /// one leaves nothing; a seal without pieces is an error naming the object.
    #[tokio::test]
    async fn spooled_segments_become_whole_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).await;
        assert!(store.spools());
        let hour = "t/dt=2017-06-20/hour=07";
        let piece = |n: usize, b: u8| vec![b; n * DIRECT_ALIGN];
        for (spool, bytes) in [
            (".0-1.spool", piece(1, b'a')),
            (".1-2.spool", piece(2, b'x')),
            (".0-1.spool", piece(300, b'b')),
        ] {
            let spool = format!("{hour}/{spool}");
            store.spool(SpoolOp::Append { spool, bytes }).await;
        }
        store
            .spool(SpoolOp::Discard {
                spool: format!("{hour}/.1-2.spool"),
            })
            .await;
        let name = format!("{hour}/0-5-9.ndjson");
        store
            .put_segment(
                &name,
                Some(format!("{hour}/.0-1.spool")),
                b"tail\n".to_vec(),
            )
            .await
            .unwrap();
        let object = std::fs::read(dir.path().join(&name)).unwrap();
        let mut expected = piece(1, b'a');
        expected.extend(piece(300, b'b'));
        expected.extend(b"tail\n");
        assert!(object == expected, "{} bytes", object.len());
        assert_eq!(dot_files(&dir.path().join(hour)), Vec::<String>::new());
        assert_eq!(store.list("t").await.unwrap(), [name]);
        let never = store
            .put_segment(
                &format!("{hour}/0-10-11.ndjson"),
                Some(format!("{hour}/.0-7.spool")),
                b"x\n".to_vec(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            never.contains("0-10-11.ndjson") && never.contains("never written"),
            "{never}"
        );
    }

    /// Leftover temporary and spool files go once they are older than asked; recent ones (a live
    /// host's) and objects stay.
    #[tokio::test]
    async fn leftovers_of_a_crash_are_swept_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).await;
        let hour = dir.path().join("t/dt=2017-06-20/hour=07");
        std::fs::create_dir_all(&hour).unwrap();
        for name in [
            ".0-1.spool.abc",
            ".0-5-9.ndjson.tmp",
            "0-5-9.ndjson",
            ".keep",
        ] {
            std::fs::write(hour.join(name), "x").unwrap();
        }
        let long = std::time::Duration::from_secs(3600);
        assert_eq!(store.sweep_leftovers("t", long).await, 0, "all recent");
        assert_eq!(
            store.sweep_leftovers("t", std::time::Duration::ZERO).await,
            2
        );
        let mut left: Vec<_> = std::fs::read_dir(&hour)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".keep", "0-5-9.ndjson"]);
    }
}
