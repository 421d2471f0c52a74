//! The contract every `BlobBackend` keeps, written against the trait so that each backend runs
//! the same checks: `check_backend(&its_backend, &staging)`. Public (hidden) so that the
//! integration tests run it against a real object store (`check_s3`); the filesystem
//! backend's own run, and what `BlobStore` adds on top of it, are this module's unit tests.
//! Panics on a broken promise: test code only.

use super::*;
use crate::config::S3Config;
use crate::oci::{Algorithm, Digest};
use bytes::Bytes;
use futures::TryStreamExt;

/// Writes `data` into the staging tier and ends the write against `expected`.
async fn stage(
    staging: &Staging,
    algorithm: Algorithm,
    data: &[u8],
    expected: Option<&Digest>,
) -> Result<Verified, StoreError> {
    let mut w = staging.writer(algorithm).await?;
    // Two writes, so that hashing on the fly is what is checked, not one call's argument.
    let (a, b) = data.split_at(data.len() / 2);
    w.write(a).await?;
    w.write(b).await?;
    w.finish(expected).await
}

async fn read_range<B: BlobBackend>(backend: &B, d: &Digest, start: u64, len: u64) -> Vec<u8> {
    let (read, _) = backend.open(d).await.unwrap().expect("blob is there");
    let chunks: Vec<Bytes> = read.stream(start, len).try_collect().await.unwrap();
    chunks.concat()
}

async fn listed<B: BlobBackend>(backend: &B) -> Vec<(Digest, u64)> {
    let mut all = backend.list().await.unwrap();
    all.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    all
}

/// The contract: commit only what matches its digest; stat, open (whole and by range), list,
/// delete and quarantine by digest; a second commit of the same blob keeps the first.
pub async fn check_backend<B: BlobBackend>(backend: &B, staging: &Staging) {
    let data: Vec<u8> = (0..3 * CHUNK_SIZE as u32 / 2)
        .map(|i| (i % 251) as u8)
        .collect();
    let d = Digest::of(&data);
    let size = data.len() as u64;

    // Nothing there yet.
    assert_eq!(backend.stat(&d).await.unwrap(), None);
    assert!(backend.open(&d).await.unwrap().is_none());
    assert!(!backend.delete(&d).await.unwrap());
    assert!(listed(backend).await.is_empty());

    // A write whose bytes do not match the expected digest never becomes a blob.
    let wrong = Digest::of(b"something else");
    match stage(staging, Algorithm::Sha256, &data, Some(&wrong)).await {
        Err(StoreError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, d);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_eq!(backend.stat(&wrong).await.unwrap(), None);
    assert_eq!(backend.stat(&d).await.unwrap(), None);

    // A matching one is committed under its digest.
    let blob = stage(staging, Algorithm::Sha256, &data, Some(&d))
        .await
        .unwrap();
    assert_eq!((blob.digest(), blob.len()), (&d, size));
    backend.commit(blob).await.unwrap();
    assert_eq!(backend.stat(&d).await.unwrap(), Some(size));
    assert_eq!(listed(backend).await, vec![(d.clone(), size)]);

    // Read whole, and by ranges: inside one chunk, across chunks, the last byte, empty.
    let (_, len) = backend.open(&d).await.unwrap().unwrap();
    assert_eq!(len, size);
    assert_eq!(read_range(backend, &d, 0, size).await, data);
    for (start, len) in [(2, 3), (CHUNK_SIZE as u64 - 5, 10), (size - 1, 1), (7, 0)] {
        let got = read_range(backend, &d, start, len).await;
        assert_eq!(
            got,
            &data[start as usize..(start + len) as usize],
            "range {start}+{len}"
        );
    }

    // The same blob again (two fetches racing): the first copy stays, readable as before.
    let again = stage(staging, Algorithm::Sha256, &data, None)
        .await
        .unwrap();
    backend.commit(again).await.unwrap();
    assert_eq!(listed(backend).await, vec![(d.clone(), size)]);
    assert_eq!(read_range(backend, &d, 0, size).await, data);

    // Other algorithms live apart; an empty blob is a blob.
    let small = stage(staging, Algorithm::Sha512, b"manifest", None)
        .await
        .unwrap();
    let d512 = small.digest().clone();
    assert_eq!(d512.algorithm(), Algorithm::Sha512);
    backend.commit(small).await.unwrap();
    let empty = stage(staging, Algorithm::Sha256, b"", None).await.unwrap();
    let d0 = empty.digest().clone();
    backend.commit(empty).await.unwrap();
    assert_eq!(backend.stat(&d512).await.unwrap(), Some(8));
    assert_eq!(backend.stat(&d0).await.unwrap(), Some(0));
    assert_eq!(read_range(backend, &d0, 0, 0).await, b"");
    assert_eq!(listed(backend).await.len(), 3);

    // Quarantine takes a blob out of reach.
    assert!(backend.quarantine(&d512).await.unwrap());
    assert_eq!(backend.stat(&d512).await.unwrap(), None);
    assert!(backend.open(&d512).await.unwrap().is_none());
    assert!(!backend.quarantine(&d512).await.unwrap());

    // Delete.
    assert!(backend.delete(&d).await.unwrap());
    assert_eq!(backend.stat(&d).await.unwrap(), None);
    assert!(backend.open(&d).await.unwrap().is_none());
    assert!(!backend.delete(&d).await.unwrap());
    assert_eq!(listed(backend).await, vec![(d0, 0)]);
}

/// The contract against the bucket of `config` (whose `rootdirectory` must hold nothing yet),
/// staging under `local`; then what only an object store does: a blob larger than
/// `chunksize` goes up in parts and reads back whole and by ranges across parts, and a
/// presigned URL is handed out.
pub async fn check_s3(config: &S3Config, local: &std::path::Path) {
    let backend = S3Backend::open(config, local)
        .await
        .expect("open the bucket");
    backend.check().await.expect("the bucket answers");
    let staging = Staging::at(local.join("tmp"));
    staging.create().await.unwrap();
    check_backend(&backend, &staging).await;

    let part = config.chunksize as usize;
    let data: Vec<u8> = (0..2 * part + 1000).map(|i| (i % 253) as u8).collect();
    let d = Digest::of(&data);
    let blob = stage(&staging, Algorithm::Sha256, &data, Some(&d))
        .await
        .unwrap();
    backend.commit(blob).await.unwrap();
    assert_eq!(backend.stat(&d).await.unwrap(), Some(data.len() as u64));
    let whole = read_range(&backend, &d, 0, data.len() as u64).await;
    assert!(whole == data, "a multipart blob reads back whole");
    let across = read_range(&backend, &d, part as u64 - 10, 20).await;
    assert_eq!(across, &data[part - 10..part + 10]);
    let url = backend
        .presign(&d, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(backend.delete(&d).await.unwrap());
    // Every staged file was uploaded or removed.
    let mut dir = tokio::fs::read_dir(local.join("tmp")).await.unwrap();
    assert!(
        dir.next_entry().await.unwrap().is_none(),
        "staged files left"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_parts(root: &std::path::Path) -> (FsBackend, Staging) {
        (FsBackend::at(root), Staging::at(root.join("tmp")))
    }

    async fn staged_files(root: &std::path::Path) -> usize {
        let mut n = 0;
        let mut dir = tokio::fs::read_dir(root.join("tmp")).await.unwrap();
        while dir.next_entry().await.unwrap().is_some() {
            n += 1;
        }
        n
    }

    #[tokio::test]
    async fn fs_backend_keeps_the_contract() {
        let root = tempfile::tempdir().unwrap();
        let (fs, staging) = fs_parts(root.path());
        fs.create().await.unwrap();
        staging.create().await.unwrap();
        check_backend(&fs, &staging).await;
        // Every staged file was either moved into place or removed.
        assert_eq!(staged_files(root.path()).await, 0);
    }

    #[tokio::test]
    async fn store_commits_only_on_a_matching_digest() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path()).await.unwrap();
        let wrong = Digest::of(b"not these bytes");

        let mut w = store.writer().await.unwrap();
        w.write(b"layer bytes").await.unwrap();
        let err = store.commit(w, Some(&wrong)).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err:?}");
        assert!(store.list().await.unwrap().is_empty());
        assert_eq!(
            staged_files(root.path()).await,
            0,
            "a mismatch leaves no file"
        );

        // An abandoned write (a fetch whose client and upstream went away) leaves nothing either.
        let mut w = store.writer().await.unwrap();
        w.write(b"half a layer").await.unwrap();
        drop(w);
        assert_eq!(staged_files(root.path()).await, 0);

        let mut w = store.writer().await.unwrap();
        w.write(b"layer bytes").await.unwrap();
        let d = Digest::of(b"layer bytes");
        assert_eq!(store.commit(w, Some(&d)).await.unwrap(), (d.clone(), 11));
        assert_eq!(store.stat(&d).await.unwrap(), Some(11));
        assert_eq!(store.rehash(&d).await.unwrap(), Some(d.clone()));
    }

    #[tokio::test]
    async fn store_reads_small_blobs_whole_and_counts_open_reads() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path()).await.unwrap();
        let d = store
            .put_bytes(Algorithm::Sha256, b"{\"schemaVersion\":2}", false)
            .await
            .unwrap();
        assert_eq!(
            store.read_small(&d, 1024).await.unwrap().as_deref(),
            Some(&b"{\"schemaVersion\":2}"[..])
        );
        assert!(matches!(
            store.read_small(&d, 4).await,
            Err(StoreError::TooLarge(4))
        ));
        assert_eq!(
            store.read_small(&Digest::of(b"x"), 1024).await.unwrap(),
            None
        );

        assert!(!store.is_being_read(&d));
        let open = store.open_blob(&d).await.unwrap().expect("committed");
        let second = store.open_blob(&d).await.unwrap().expect("committed");
        assert!(matches!(open.read, BlobRead::File(_)));
        assert_eq!(open.size, 19);
        drop(open);
        assert!(store.is_being_read(&d), "one reader still has it open");
        drop(second);
        assert!(!store.is_being_read(&d));
        // A miss holds no lease.
        assert!(store.open_blob(&Digest::of(b"x")).await.unwrap().is_none());
        assert!(!store.is_being_read(&Digest::of(b"x")));
    }

    #[tokio::test]
    async fn a_growing_file_is_readable_until_committed() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path()).await.unwrap();
        let mut w = store.writer().await.unwrap();
        let growing = w.growing();
        w.write(b"first ").await.unwrap();
        w.flush().await.unwrap();
        let f = growing.open().unwrap().expect("staged file is there");
        assert_eq!(read_at(&f, 0, 100).unwrap(), &b"first "[..]);
        w.write(b"second").await.unwrap();
        w.verify(&Digest::of(b"first second")).await.unwrap();
        assert_eq!(read_at(&f, 0, 100).unwrap(), &b"first second"[..]);
        store.commit(w, None).await.unwrap();
        assert!(
            growing.open().unwrap().is_none(),
            "committed: no staged file"
        );
    }
}
