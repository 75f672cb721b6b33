fn main() {
    println!("hav-coordinator");
}
