//! The `wsloop` binary (the server and its tools arrive with the engine).
fn main() {
    eprintln!("wsloop: the server is not built yet; see README.md");
    std::process::exit(2);
}
