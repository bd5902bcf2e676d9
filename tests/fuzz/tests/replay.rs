//! Replays the fuzz corpus on the stable toolchain: every file in
//! `seeds/<target>/` goes through the same function the fuzz target calls,
//! then seeds mutated by a fixed-seed xorshift generator, then purely
//! pseudo-random inputs. Same inputs on every run; a failure names the
//! target and prints the input.

use std::path::{Path, PathBuf};

/// Pseudo-random inputs per target (half mutated seeds, half random bytes).
const RANDOM_INPUTS: usize = 2000;

/// Marsaglia's xorshift64: deterministic, no extra crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A copy of `seed` with a few bytes flipped, inserted or removed.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..=self.below(4) {
            let at = self.below(v.len() + 1);
            match self.below(4) {
                0 if at < v.len() => v[at] = self.next() as u8,
                1 if at < v.len() => {
                    v.remove(at);
                }
                2 => {
                    let end = (at + self.below(16)).min(v.len());
                    let copy = v[at..end].to_vec();
                    v.splice(at..at, copy);
                }
                _ => v.insert(at, self.next() as u8),
            }
        }
        v
    }
}

fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = seed_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no seed directory {}: {e}", dir.display()))
        .map(|e| e.expect("read seed directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

fn run(target: &str, body: fn(&[u8]), what: &str, data: &[u8]) {
    if std::panic::catch_unwind(|| body(data)).is_err() {
        panic!(
            "fuzz target {target} failed on {what}; input ({} bytes): {:?}",
            data.len(),
            data.escape_ascii().to_string()
        );
    }
}

#[test]
fn every_target_has_a_binary_and_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in tern_fuzz::TARGETS {
        let bin = root.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(bin.is_file(), "no {}", bin.display());
        assert!(
            !seeds(name).is_empty(),
            "no seeds in {}",
            seed_dir(name).display()
        );
    }
    let listed = std::fs::read_dir(root.join("fuzz_targets"))
        .expect("fuzz_targets/")
        .count();
    assert_eq!(
        listed,
        tern_fuzz::TARGETS.len(),
        "a target missing from TARGETS"
    );
}

#[test]
fn replay_seeds_and_pseudo_random_inputs() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for &(name, body) in tern_fuzz::TARGETS {
        let corpus = seeds(name);
        assert!(!corpus.is_empty(), "target {name}: no seed ran");
        for (path, data) in &corpus {
            run(name, body, &path.display().to_string(), data);
        }
        for i in 0..RANDOM_INPUTS {
            let data = if i % 2 == 0 {
                let (_, seed) = &corpus[rng.below(corpus.len())];
                rng.mutate(seed)
            } else {
                rng.bytes(96)
            };
            run(name, body, &format!("pseudo-random input {i}"), &data);
        }
        eprintln!(
            "{name}: {} seeds, {RANDOM_INPUTS} pseudo-random inputs",
            corpus.len()
        );
    }
}

#[test]
fn alphabet_mapping() {
    let alphabet: &[&[u8]] = &[b"ab", b"c"];
    assert_eq!(tern_fuzz::mapped(&[0, 1, 2, 3], alphabet), b"abcabc");
    assert!(tern_fuzz::mapped(&[], alphabet).is_empty());
}
