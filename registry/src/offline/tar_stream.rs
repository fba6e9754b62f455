//! A tar archive written as an async byte stream: each entry's size is known up front (from
//! the image descriptors), so headers go out first and content streams after them without
//! ever holding an entry in memory.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

const BLOCK: usize = 512;

/// The sending half; the receiving half becomes the HTTP response body.
pub(crate) struct TarSender {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

pub(crate) type TarReceiver = mpsc::Receiver<std::io::Result<Bytes>>;

pub(crate) fn channel() -> (TarSender, TarReceiver) {
    let (tx, rx) = mpsc::channel(8);
    (TarSender { tx }, rx)
}

impl TarSender {
    /// Starts an entry of `size` bytes; the caller sends exactly that many, then [`Self::end_entry`].
    pub async fn begin_entry(&self, path: &str, size: u64) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).map_err(|e| Error::invalid_package(format!("tar path {path}: {e}")))?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.send(Bytes::copy_from_slice(header.as_bytes())).await
    }

    pub async fn send(&self, bytes: Bytes) -> Result<()> {
        self.tx.send(Ok(bytes)).await.map_err(|_| Error::Body("the receiver of the archive went away".into()))
    }

    /// Pads the entry of `size` bytes to the block size.
    pub async fn end_entry(&self, size: u64) -> Result<()> {
        let rest = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        if rest > 0 { self.send(Bytes::from(vec![0u8; rest])).await } else { Ok(()) }
    }

    pub async fn file(&self, path: &str, content: Bytes) -> Result<()> {
        let size = content.len() as u64;
        self.begin_entry(path, size).await?;
        self.send(content).await?;
        self.end_entry(size).await
    }

    /// Ends the archive with its two zero blocks.
    pub async fn finish(self) -> Result<()> {
        self.send(Bytes::from(vec![0u8; 2 * BLOCK])).await
    }

    /// Cuts the stream with an error, so the receiver sees a failed transfer rather than a
    /// shorter archive that happens to end cleanly.
    pub async fn fail(self, error: &Error) {
        let _ = self.tx.send(Err(std::io::Error::other(error.to_string()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_streamed_archive_reads_back_with_the_tar_crate() {
        let (tx, mut rx) = channel();
        let writer = tokio::spawn(async move {
            tx.file("a.txt", Bytes::from_static(b"hello")).await.unwrap();
            tx.begin_entry("blobs/sha256/x", 600).await.unwrap();
            tx.send(Bytes::from(vec![7u8; 100])).await.unwrap();
            tx.send(Bytes::from(vec![8u8; 500])).await.unwrap();
            tx.end_entry(600).await.unwrap();
            tx.finish().await.unwrap();
        });
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.recv().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        writer.await.unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let read: Vec<(String, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut content).unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), content)
            })
            .collect();
        assert_eq!(read[0], ("a.txt".to_owned(), b"hello".to_vec()));
        assert_eq!(read[1].0, "blobs/sha256/x");
        assert_eq!(read[1].1.len(), 600);
        assert_eq!(read[1].1[599], 8);
    }
}
