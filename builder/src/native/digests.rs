//! Content digests of context files, remembered by (device, inode, mtime, ctime) so an
//! unchanged rebuild proves "nothing changed" from metadata alone. Kept in memory and in the
//! object store (per context root), so a restarted service does not rehash.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::context::{BuildContext, EntryKind};
use crate::error::{Error, Result};
use crate::store::BlobStore;

type Stamp = (u64, u64, i64, i64);

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Known(HashMap<String, (Stamp, String)>);

#[derive(Debug, Default)]
pub struct ContentDigests {
    by_root: Mutex<HashMap<String, Known>>,
}

impl ContentDigests {
    /// Digest (hex) of every file of the context, hashing only files whose stamp changed.
    pub async fn of_context(
        &self,
        ctx: &BuildContext,
        store: &BlobStore,
    ) -> Result<BTreeMap<String, String>> {
        let root_key = crate::digest::sha256_hex(ctx.root.to_string_lossy().as_bytes());
        let cached = self.by_root.lock().expect("digest map poisoned").get(&root_key).cloned();
        let known = match cached {
            Some(known) => known,
            None => store.record::<Known>("digests", &root_key).await?.unwrap_or_default(),
        };
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for (rel, entry) in ctx.entries.iter().filter(|(_, e)| e.kind == EntryKind::File) {
            match known.0.get(rel) {
                Some((stamp, digest)) if *stamp == entry.stamp => {
                    out.insert(rel.clone(), digest.clone());
                }
                _ => missing.push((rel.clone(), entry.stamp)),
            }
        }
        if missing.is_empty() && known.0.len() == out.len() {
            return Ok(out);
        }
        let hashed = hash_all(ctx, &missing)?;
        out.extend(hashed.iter().map(|(rel, digest)| (rel.clone(), digest.clone())));
        let mut fresh = Known::default();
        for (rel, stamp) in &missing {
            fresh.0.insert(rel.clone(), (*stamp, hashed[rel].clone()));
        }
        for (rel, digest) in &out {
            if !fresh.0.contains_key(rel) {
                fresh.0.insert(rel.clone(), (ctx.entries[rel].stamp, digest.clone()));
            }
        }
        store.put_record("digests", &root_key, &fresh).await?;
        self.by_root.lock().expect("digest map poisoned").insert(root_key, fresh);
        Ok(out)
    }
}

/// Hashes files on every core.
fn hash_all(ctx: &BuildContext, files: &[(String, Stamp)]) -> Result<HashMap<String, String>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<(String, String)>> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((rel, _)) = files.get(i) else { return Ok(done) };
                        let path = ctx.path_of(rel);
                        done.push((rel.clone(), crate::digest::sha256_file(&path).map_err(Error::io(path))?));
                    }
                })
            })
            .collect();
        let mut out = HashMap::new();
        for handle in handles {
            out.extend(handle.join().expect("hash worker panicked")?);
        }
        Ok(out)
    })
}
