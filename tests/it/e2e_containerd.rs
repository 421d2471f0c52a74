//! End to end with containerd (issue 18): a private containerd whose `certs.d`-style hosts
//! directory names stevedore as the mirror of `docker.io` and `ghcr.io` pulls through it.
//! containerd adds `?ns=<registry>` to each mirror request; stevedore must route `ns=docker.io`
//! to its default upstream even when that is not Docker Hub itself (here a fake upstream on a
//! loopback port), and `ns=ghcr.io` to the upstream of that name. Each `server =` fallback is a
//! closed loopback port, so a request the mirror refuses cannot be answered anywhere else.
//!
//! Nothing is skipped: a missing `containerd` or `ctr` fails the test with an install hint
//! (`require_daemon` asserts, whatever its name says).

use crate::common::containerd::{Containerd, require_daemon, write_hosts_toml};
use crate::common::fake_upstream::{FakeOptions, FakeUpstream};
use crate::common::tools::free_port;
use crate::common::*;

use crate::common::oci_layout::{Image, seed_upstream as seed};

/// Docker Hub's stand-in serving `library/app:v1`, ghcr.io's serving `owner/tool:2.0`, and a
/// mirror of the first whose upstream named `ghcr.io` is the second.
pub(crate) struct TwoRegistries {
    pub hub: FakeUpstream,
    pub hub_image: Image,
    pub ghcr: FakeUpstream,
    pub ghcr_image: Image,
    pub mirror: Server,
}

impl TwoRegistries {
    pub async fn start(dir: &std::path::Path) -> TwoRegistries {
        // The default upstream is not registry-1.docker.io: a corporate upstream or another
        // mirror.
        let hub = FakeUpstream::start(FakeOptions::default()).await;
        let ghcr = FakeUpstream::start(FakeOptions::default()).await;
        let hub_image = seed(&hub, dir, "library/app", "v1", 1);
        let ghcr_image = seed(&ghcr, dir, "owner/tool", "2.0", 2);
        let mirror = Server::mirror(
            &hub.url(),
            &format!(
                "  upstreams:\n    - name: ghcr.io\n      remoteurl: {}\n",
                ghcr.url()
            ),
        );
        TwoRegistries {
            hub,
            hub_image,
            ghcr,
            ghcr_image,
            mirror,
        }
    }

    /// Everything came through the mirror: `ctd` holds every blob of both images, and each
    /// upstream was asked for its own image only.
    pub fn assert_each_from_its_upstream(&self, ctd: &Containerd) {
        let content = ctd.ctr_ok(&["content", "ls", "-q"]);
        for d in self
            .hub_image
            .digests()
            .into_iter()
            .chain(self.ghcr_image.digests())
        {
            assert!(content.contains(d), "{d} not in containerd:\n{content}");
        }
        assert!(self.hub.requests("GET", "/v2/library/app/manifests/v1") >= 1);
        assert_eq!(self.hub.requests("", "owner/tool"), 0);
        assert!(self.ghcr.requests("GET", "/v2/owner/tool/manifests/2.0") >= 1);
        assert_eq!(self.ghcr.requests("", "library/app"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_docker_io_and_ghcr_io_through_the_mirror() {
    require_daemon("containerd_pulls_docker_io_and_ghcr_io_through_the_mirror");
    let tmp = tempfile::tempdir().unwrap();
    let two = TwoRegistries::start(tmp.path()).await;
    let (s, hub_image) = (&two.mirror, &two.hub_image);
    let ctd = Containerd::start();
    let hosts = ctd.dir().join("certs.d");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    for registry in ["docker.io", "ghcr.io"] {
        write_hosts_toml(&hosts, registry, &s.url(""), &nowhere);
    }
    ctd.fetch_ok(&hosts, "docker.io/library/app:v1");
    ctd.fetch_ok(&hosts, "ghcr.io/owner/tool:2.0");
    two.assert_each_from_its_upstream(&ctd);
    // The blobs are cached here too, under the name the mirror keeps for each registry.
    let r = client()
        .get(s.url(&format!(
            "/v2/library/app/blobs/{}",
            hub_image.layers[0].desc.digest
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A registry nothing here mirrors: stevedore answers 404, and the fetch fails (its
    // fallback is closed) instead of being served some other registry's image.
    write_hosts_toml(&hosts, "quay.io", &s.url(""), &nowhere);
    let hosts = hosts.display().to_string();
    let out = ctd.ctr(&[
        "content",
        "fetch",
        "--hosts-dir",
        &hosts,
        "quay.io/library/app:v1",
    ]);
    assert!(!out.status.success(), "quay.io was served by the mirror");
    assert!(
        s.logged("quay.io").await,
        "stevedore was not asked for quay.io:\n{}",
        tools::tail(&s.log_text(), 20)
    );
}
