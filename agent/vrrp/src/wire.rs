//! VRRP advertisement codec (filled in by the wire work).
