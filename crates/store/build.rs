fn main() {
    // cargo-fuzz builds with `--cfg fuzzing` (see journal.rs `crc_matches`).
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
