package api

import (
	"fmt"
	"math/bits"
	"net/netip"
	"strings"
)

// IPv4 arithmetic for the datacenter's address plans: pod reserved ranges,
// public and guest ranges, storage ranges. Addresses are uint32 so ranges
// compare, count and iterate with plain integer math.

// maxRangeSize caps how many addresses one call may add (a /16): each
// address becomes an inventory row.
const maxRangeSize = 65536

// parseIPv4 parses a dotted-quad IPv4 address (no IPv6, no zones).
func parseIPv4(s string) (uint32, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return 0, fmt.Errorf("%q is not an IPv4 address", clip(s, 64))
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), nil
}

// ipv4String formats an address as a dotted quad.
func ipv4String(ip uint32) string {
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}).String()
}

// parseNetmask parses a dotted netmask (255.255.255.0) and returns its
// prefix length; the ones must be contiguous.
func parseNetmask(s string) (int, error) {
	m, err := parseIPv4(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a netmask", clip(s, 64))
	}
	n := bits.LeadingZeros32(^m)
	if m != prefixMask(n) {
		return 0, fmt.Errorf("%q is not a netmask (its ones are not contiguous)", clip(s, 64))
	}
	return n, nil
}

// prefixMask is the netmask of a prefix length (0..32) as a number.
func prefixMask(n int) uint32 {
	if n <= 0 {
		return 0
	}
	if n >= 32 {
		return 0xffffffff
	}
	return ^uint32(0) << (32 - n)
}

// netmaskString formats a prefix length as a dotted netmask.
func netmaskString(n int) string { return ipv4String(prefixMask(n)) }

// subnet is an IPv4 network: its network address and prefix length.
type subnet struct {
	Net  uint32
	Bits int
}

// subnetOf is the network an address lies in under a prefix length.
func subnetOf(ip uint32, n int) subnet { return subnet{Net: ip & prefixMask(n), Bits: n} }

// Broadcast is the last address of the subnet.
func (s subnet) Broadcast() uint32 { return s.Net | ^prefixMask(s.Bits) }

// Contains tells whether ip is in the subnet.
func (s subnet) Contains(ip uint32) bool { return ip&prefixMask(s.Bits) == s.Net }

// Hosts is the range of addresses hosts may use: all but the network and
// broadcast addresses, except on /31 and /32 where every address counts.
func (s subnet) Hosts() ipRange {
	if s.Bits >= 31 {
		return ipRange{Start: s.Net, End: s.Broadcast()}
	}
	return ipRange{Start: s.Net + 1, End: s.Broadcast() - 1}
}

// CIDR formats the subnet as a.b.c.d/n.
func (s subnet) CIDR() string { return fmt.Sprintf("%s/%d", ipv4String(s.Net), s.Bits) }

// Overlaps tells whether two subnets share an address.
func (s subnet) Overlaps(o subnet) bool {
	return s.Range().Overlaps(o.Range())
}

// Range is every address of the subnet.
func (s subnet) Range() ipRange { return ipRange{Start: s.Net, End: s.Broadcast()} }

// ipRange is an inclusive range of IPv4 addresses.
type ipRange struct {
	Start, End uint32
}

// parseIPRange parses start and end addresses (end empty means start alone)
// and checks start <= end.
func parseIPRange(start, end string) (ipRange, error) {
	s, err := parseIPv4(start)
	if err != nil {
		return ipRange{}, err
	}
	e := s
	if strings.TrimSpace(end) != "" {
		if e, err = parseIPv4(end); err != nil {
			return ipRange{}, err
		}
	}
	if s > e {
		return ipRange{}, fmt.Errorf("the start address %s is after the end address %s", ipv4String(s), ipv4String(e))
	}
	return ipRange{Start: s, End: e}, nil
}

// Size is the number of addresses in the range.
func (r ipRange) Size() uint64 { return uint64(r.End) - uint64(r.Start) + 1 }

// Contains tells whether ip is in the range.
func (r ipRange) Contains(ip uint32) bool { return ip >= r.Start && ip <= r.End }

// Within tells whether the whole range lies inside o.
func (r ipRange) Within(o ipRange) bool { return r.Start >= o.Start && r.End <= o.End }

// Overlaps tells whether two ranges share an address.
func (r ipRange) Overlaps(o ipRange) bool { return r.Start <= o.End && o.Start <= r.End }

// Each calls fn for every address in order, stopping when fn returns false.
func (r ipRange) Each(fn func(ip uint32) bool) {
	for ip := uint64(r.Start); ip <= uint64(r.End); ip++ {
		if !fn(uint32(ip)) {
			return
		}
	}
}

// String formats the range as start-end.
func (r ipRange) String() string { return ipv4String(r.Start) + "-" + ipv4String(r.End) }

// addressPlan is a validated gateway/netmask/start/end quadruple as the
// range commands take them.
type addressPlan struct {
	Gateway uint32
	Subnet  subnet
	Range   ipRange
}

// checkAddressPlan applies the rules every IPv4 range follows: all four
// parse, the range lies inside the gateway's subnet (network and broadcast
// addresses excluded), the gateway is not in the range, and the range holds
// at most maxRangeSize addresses. Errors name the offending parameter.
func checkAddressPlan(gateway, netmask, start, end string) (addressPlan, error) {
	var p addressPlan
	gw, err := parseIPv4(gateway)
	if err != nil {
		return p, fmt.Errorf("gateway: %w", err)
	}
	n, err := parseNetmask(netmask)
	if err != nil {
		return p, fmt.Errorf("netmask: %w", err)
	}
	if n == 0 {
		return p, fmt.Errorf("netmask: %s covers every address; give a real subnet", netmask)
	}
	r, err := parseIPRange(start, end)
	if err != nil {
		return p, fmt.Errorf("startip/endip: %w", err)
	}
	sn := subnetOf(gw, n)
	hosts := sn.Hosts()
	if !hosts.Contains(gw) {
		return p, fmt.Errorf("gateway %s is the network or broadcast address of %s", ipv4String(gw), sn.CIDR())
	}
	if !r.Within(hosts) {
		return p, fmt.Errorf("the range %s is not inside the subnet %s of gateway %s and netmask %s (usable %s)",
			r, sn.CIDR(), ipv4String(gw), netmaskString(n), hosts)
	}
	if r.Contains(gw) {
		return p, fmt.Errorf("the range %s contains the gateway %s", r, ipv4String(gw))
	}
	if r.Size() > maxRangeSize {
		return p, fmt.Errorf("the range %s holds %d addresses; at most %d (a /16) may be added in one call", r, r.Size(), maxRangeSize)
	}
	return addressPlan{Gateway: gw, Subnet: sn, Range: r}, nil
}
