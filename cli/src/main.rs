fn main() {
    println!("havctl");
}
