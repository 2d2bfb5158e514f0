//! An in-memory engine for the executor's fault tests, omicron-style: containers, names and
//! running states as a real engine keeps them, failures scripted per call, and a crash at
//! call N — that call takes effect but its answer is lost, and every later call fails, as
//! if berth had been killed there. Tests reach interleavings the real engine reaches only
//! by luck, in-process; the real-engine kill tests stay beside it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::{Engine, EngineError, Found, FoundVolume, FreeSpace, ImageRemoval};
use crate::container::{Network, NewContainer, ObservedContainer, Volume, label};
use crate::image::Credentials;

/// One container as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// A one-shot, which exits as soon as it starts, with the world's `job_exit`.
    pub job: bool,
    pub exit_code: Option<i64>,
}

#[derive(Debug, Default)]
struct World {
    containers: BTreeMap<String, FakeContainer>,
    images: BTreeSet<String>,
    next_id: u64,
    calls: u64,
    crash_at: Option<u64>,
    /// Call numbers that fail without effect, as a flaky engine's would.
    fail_at: BTreeSet<u64>,
    /// How every job exits.
    job_exit: i64,
    volumes: BTreeMap<String, BTreeMap<String, String>>,
    networks: BTreeMap<String, BTreeMap<String, String>>,
    /// The data root's free bytes, or why they cannot be measured.
    free: Option<Result<u64, String>>,
    /// Updates containers in place, as a swarm's services: each keeps the image and labels
    /// its last update replaced, which `revert` goes back to.
    in_place: bool,
    previous: BTreeMap<String, (String, BTreeMap<String, String>)>,
}

#[derive(Debug, Default)]
pub struct FakeEngine {
    world: RefCell<World>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

fn refused(what: &str, why: impl Into<String>) -> EngineError {
    EngineError::Engine {
        what: what.to_owned(),
        source: Box::new(Refused(why.into())),
    }
}

/// Whether a call may act, and what it answers afterwards.
enum Turn {
    Act,
    /// Acts, then the answer is lost: the process died during the call.
    ActThenCrash,
    Fail,
}

impl FakeEngine {
    pub fn with_images(images: &[&str]) -> Self {
        let fake = FakeEngine::default();
        fake.world
            .borrow_mut()
            .images
            .extend(images.iter().map(|i| (*i).to_owned()));
        fake
    }

    /// The data root's free space as the engine reports it: bytes, or why it cannot be
    /// measured. Unset, the data root has room for anything.
    pub fn set_free(&self, free: Result<u64, String>) {
        self.world.borrow_mut().free = Some(free);
    }

    /// Containers are updated in place from now on, as a swarm's services are.
    pub fn update_in_place(&self) {
        self.world.borrow_mut().in_place = true;
    }

    /// Puts a managed container on the host, as an earlier run would have left it.
    pub fn insert(&self, c: FakeContainer) {
        self.world.borrow_mut().containers.insert(c.id.clone(), c);
    }

    /// From call `n` on (counting from the next call, 1-based), the process is dead.
    pub fn crash_at(&self, n: u64) {
        let mut w = self.world.borrow_mut();
        w.crash_at = Some(w.calls + n);
    }

    /// The next calls numbered in `calls` (1-based from the next call) fail without effect.
    pub fn fail_calls(&self, calls: impl IntoIterator<Item = u64>) {
        let mut w = self.world.borrow_mut();
        let base = w.calls;
        w.fail_at = calls.into_iter().map(|n| base + n).collect();
    }

    /// A new process: no crash pending, no failures scripted.
    pub fn restart(&self) {
        let mut w = self.world.borrow_mut();
        w.crash_at = None;
        w.fail_at.clear();
    }

    /// How many calls berth has made.
    pub fn calls(&self) -> u64 {
        self.world.borrow().calls
    }

    /// Every job started from now on exits with `code`.
    pub fn set_job_exit(&self, code: i64) {
        self.world.borrow_mut().job_exit = code;
    }

    /// The names of the volumes it holds.
    pub fn volumes(&self) -> Vec<String> {
        self.world.borrow().volumes.keys().cloned().collect()
    }

    /// The names of the networks it holds.
    pub fn networks(&self) -> Vec<String> {
        self.world.borrow().networks.keys().cloned().collect()
    }

    pub fn containers(&self) -> Vec<FakeContainer> {
        self.world.borrow().containers.values().cloned().collect()
    }

    fn turn(&self, what: &str) -> Result<Turn, EngineError> {
        let mut w = self.world.borrow_mut();
        w.calls += 1;
        let n = w.calls;
        match w.crash_at {
            Some(c) if n > c => return Err(refused(what, "berth is not running")),
            Some(c) if n == c => return Ok(Turn::ActThenCrash),
            _ => {}
        }
        Ok(if w.fail_at.contains(&n) {
            Turn::Fail
        } else {
            Turn::Act
        })
    }

    /// Runs one call: `act` changes the world (or refuses, as an engine would).
    fn call<T>(
        &self,
        what: &str,
        act: impl FnOnce(&mut World) -> Result<T, String>,
    ) -> Result<T, EngineError> {
        match self.turn(what)? {
            Turn::Fail => Err(refused(what, "the engine failed")),
            Turn::Act => act(&mut self.world.borrow_mut()).map_err(|why| refused(what, why)),
            Turn::ActThenCrash => {
                let _ = act(&mut self.world.borrow_mut());
                Err(refused(what, "berth was killed during the call"))
            }
        }
    }
}

fn lookup<'a>(w: &'a mut World, name_or_id: &str) -> Option<&'a mut FakeContainer> {
    let id = w
        .containers
        .values()
        .find(|c| c.id == name_or_id || c.name == name_or_id)
        .map(|c| c.id.clone())?;
    w.containers.get_mut(&id)
}

impl Engine for FakeEngine {
    async fn list_managed(&self, partner: &str) -> Result<Vec<ObservedContainer>, EngineError> {
        self.call("list containers", |w| {
            Ok(w.containers
                .values()
                .filter(|c| {
                    c.labels.get(label::MANAGED).map(String::as_str) == Some("true")
                        && c.labels.get(label::PARTNER).map(String::as_str) == Some(partner)
                })
                .map(|c| {
                    ObservedContainer::from_labels(
                        c.id.clone(),
                        c.name.clone(),
                        |k| c.labels.get(k).cloned(),
                        c.running,
                        None,
                    )
                })
                .collect())
        })
    }

    async fn local_tags(&self, _repository: &str) -> Result<Vec<(String, String)>, EngineError> {
        self.call("list images", |_| Ok(Vec::new()))
    }

    async fn create(&self, new: &NewContainer<'_>) -> Result<String, EngineError> {
        self.call(&format!("create {}", new.name), |w| {
            if !w.images.contains(new.image) {
                return Err(format!("no such image {}", new.image));
            }
            if w.containers.values().any(|c| c.name == new.name) {
                return Err(format!("409: the name {} is already in use", new.name));
            }
            w.next_id += 1;
            let id = format!("c{:04}", w.next_id);
            w.containers.insert(
                id.clone(),
                FakeContainer {
                    id: id.clone(),
                    name: new.name.to_owned(),
                    image: new.image.to_owned(),
                    labels: new
                        .labels()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                    running: false,
                    job: new.spec.job,
                    exit_code: None,
                },
            );
            Ok(id)
        })
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.call(&format!("start {id}"), |w| {
            let exit = w.job_exit;
            match lookup(w, id) {
                Some(c) if c.job => {
                    c.exit_code = Some(exit);
                    Ok(())
                }
                Some(c) => {
                    c.running = true;
                    Ok(())
                }
                None => Err(format!("404: no such container {id}")),
            }
        })
    }

    async fn stop(&self, id: &str) -> Result<(), EngineError> {
        self.call(&format!("stop {id}"), |w| {
            if let Some(c) = lookup(w, id) {
                c.running = false;
            }
            Ok(())
        })
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        self.call(&format!("rename {id} to {name}"), |w| {
            if w.containers.values().any(|c| c.name == name && c.id != id) {
                return Err(format!("409: the name {name} is already in use"));
            }
            match lookup(w, id) {
                Some(c) => {
                    c.name = name.to_owned();
                    Ok(())
                }
                None => Err(format!("404: no such container {id}")),
            }
        })
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.call(&format!("remove {id}"), |w| {
            let found = lookup(w, id).map(|c| c.id.clone());
            if let Some(found) = found {
                w.containers.remove(&found);
            }
            Ok(())
        })
    }

    async fn find(&self, name_or_id: &str) -> Result<Option<Found>, EngineError> {
        self.call(&format!("inspect {name_or_id}"), |w| {
            let in_place = w.in_place;
            Ok(lookup(w, name_or_id).map(|c| Found {
                id: c.id.clone(),
                name: c.name.clone(),
                running: c.running,
                restarts: 0,
                partner: c.labels.get(label::PARTNER).cloned(),
                secrets_dir: c.labels.get(label::SECRETS_DIR).cloned(),
                // A service whose tasks run is converged at once here.
                health: in_place.then(|| if c.running { "healthy" } else { "starting" }.into()),
                exit_code: c.exit_code,
            }))
        })
    }

    fn updates_in_place(&self) -> bool {
        self.world.borrow().in_place
    }

    async fn update(&self, id: &str, new: &NewContainer<'_>) -> Result<(), EngineError> {
        self.call(&format!("update {id}"), |w| {
            if !w.images.contains(new.image) {
                return Err(format!("no such image {}", new.image));
            }
            let c = lookup(w, id).ok_or("no such service")?;
            let before = (
                std::mem::replace(&mut c.image, new.image.to_owned()),
                std::mem::replace(
                    &mut c.labels,
                    new.labels()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                ),
            );
            let key = c.id.clone();
            w.previous.insert(key, before);
            Ok(())
        })
    }

    async fn revert(&self, id: &str, fingerprint: &str) -> Result<(), EngineError> {
        self.call(&format!("revert {id}"), |w| {
            let Some(c) = lookup(w, id) else {
                return Ok(());
            };
            let labels: std::collections::HashMap<String, String> =
                c.labels.clone().into_iter().collect();
            if crate::container::fingerprint(&labels) == fingerprint {
                return Ok(());
            }
            let key = c.id.clone();
            let (image, labels) = w.previous.remove(&key).ok_or("no previous spec")?;
            let c = lookup(w, id).expect("found above");
            let replaced = (
                std::mem::replace(&mut c.image, image),
                std::mem::replace(&mut c.labels, labels),
            );
            w.previous.insert(key, replaced);
            Ok(())
        })
    }

    async fn has_image(&self, reference: &str) -> Result<bool, EngineError> {
        self.call(&format!("inspect image {reference}"), |w| {
            Ok(w.images.contains(reference))
        })
    }

    async fn ensure_volume(&self, volume: &Volume) -> Result<(), EngineError> {
        self.call(&format!("create volume {}", volume.name), |w| {
            let labels: BTreeMap<String, String> = volume
                .labels()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            match w.volumes.get(&volume.name) {
                Some(found) if *found == labels => Ok(()),
                Some(_) => Err(format!("volume {} is not berth's", volume.name)),
                None => {
                    w.volumes.insert(volume.name.clone(), labels);
                    Ok(())
                }
            }
        })
    }

    async fn list_volumes(&self, partner: Option<&str>) -> Result<Vec<FoundVolume>, EngineError> {
        self.call("list volumes", |w| {
            Ok(w.volumes
                .iter()
                .filter_map(|(name, l)| {
                    let get = |k: &str| l.get(k).cloned();
                    Some(FoundVolume {
                        name: name.clone(),
                        partner: get(label::PARTNER)?,
                        script: get(label::SCRIPT)?,
                        volume: get(label::VOLUME)?,
                    })
                })
                .filter(|v| partner.is_none_or(|p| v.partner == p))
                .collect())
        })
    }

    async fn ensure_network(&self, network: &Network) -> Result<(), EngineError> {
        self.call(&format!("create network {}", network.name), |w| {
            let labels: BTreeMap<String, String> = network
                .labels()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            match w.networks.get(&network.name) {
                Some(found) if *found == labels => Ok(()),
                Some(_) => Err(format!("network {} is not berth's", network.name)),
                None => {
                    w.networks.insert(network.name.clone(), labels);
                    Ok(())
                }
            }
        })
    }

    async fn remove_network(&self, network: &Network) -> Result<(), EngineError> {
        self.call(&format!("remove network {}", network.name), |w| {
            w.networks.remove(&network.name);
            Ok(())
        })
    }

    async fn own_paths(&self) -> Result<Vec<(String, &'static str)>, EngineError> {
        self.call("info", |_| Ok(Vec::new()))
    }

    async fn pull(
        &self,
        reference: &str,
        _credentials: Option<&Credentials>,
    ) -> Result<(), EngineError> {
        self.call(&format!("pull {reference}"), |w| {
            w.images.insert(reference.to_owned());
            Ok(())
        })
    }

    /// The fake's image ids are the references themselves.
    async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        self.call(&format!("inspect image {reference}"), |w| {
            Ok(w.images.contains(reference).then(|| reference.to_owned()))
        })
    }

    async fn images_in_use(&self) -> Result<BTreeSet<String>, EngineError> {
        self.call("list containers", |w| {
            Ok(w.containers.values().map(|c| c.image.clone()).collect())
        })
    }

    async fn remove_image(&self, reference: &str) -> Result<ImageRemoval, EngineError> {
        self.call(&format!("remove image {reference}"), |w| {
            Ok(if w.containers.values().any(|c| c.image == reference) {
                ImageRemoval::InUse
            } else if w.images.remove(reference) {
                ImageRemoval::Removed
            } else {
                ImageRemoval::Gone
            })
        })
    }

    async fn free_space(&self) -> Result<FreeSpace, EngineError> {
        self.call("info", |w| {
            let free = w.free.clone().unwrap_or(Ok(u64::MAX))?;
            Ok(FreeSpace {
                data_root: "/var/lib/docker".into(),
                free,
            })
        })
    }
}
