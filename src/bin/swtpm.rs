fn main() {
    eprintln!("vtpm: not built yet");
    std::process::exit(1);
}
