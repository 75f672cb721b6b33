//! Link arguments of the agent's programs.

fn main() {
    // Functions marked `#[link_section = ".text.hot"]` (what an idle node runs for every advert)
    // are placed together, in an output section of their own, instead of where the compiler
    // emitted them: after a sleep, the few pages they share are all a wake-up fetches again.
    // The option is lld's (Rust's default linker here); GNU ld groups `.text.hot` by its
    // default script and ignores the option with a warning.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
}
