package tests

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// nsInventoryQueries count the rows the network setup commands write.
var nsInventoryQueries = map[string]string{
	"physical_networks":   "SELECT COUNT(*) FROM physical_networks WHERE removed IS NULL",
	"traffic_types":       "SELECT COUNT(*) FROM physical_network_traffic_types",
	"service_providers":   "SELECT COUNT(*) FROM physical_network_service_providers",
	"vnets":               "SELECT COUNT(*) FROM op_dc_vnet_alloc",
	"pods":                "SELECT COUNT(*) FROM pods WHERE removed IS NULL",
	"pod_ips":             "SELECT COUNT(*) FROM op_dc_ip_address_alloc",
	"vlans":               "SELECT COUNT(*) FROM vlans WHERE removed IS NULL",
	"ip_addresses":        "SELECT COUNT(*) FROM ip_addresses",
	"storage_ranges":      "SELECT COUNT(*) FROM storage_network_ip_ranges",
	"storage_ips":         "SELECT COUNT(*) FROM op_dc_storage_network_ip_address",
	"allocated_addresses": "SELECT COUNT(*) FROM ip_addresses WHERE state <> 'Free'",
	"enabled_physnets":    "SELECT COUNT(*) FROM physical_networks WHERE removed IS NULL AND state = 'Enabled'",
}

func nsInventory(t *testing.T, db *bun.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for name, q := range nsInventoryQueries {
		var n int
		if err := db.QueryRowContext(context.Background(), q).Scan(&n); err != nil {
			t.Fatalf("count %s: %v", name, err)
		}
		out[name] = n
	}
	return out
}

// nsCount runs one COUNT(*) query.
func nsCount(t *testing.T, db *bun.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// nsRefused runs a call that must fail with code (and a text containing
// want) and leave the inventory as it was.
func nsRefused(t *testing.T, db *bun.DB, what string, code int, want string, call func() error) {
	t.Helper()
	before := nsInventory(t, db)
	err := call()
	switch {
	case err == nil:
		t.Errorf("%s: succeeded, want a %d", what, code)
	case !strings.Contains(err.Error(), strconv.Itoa(code)):
		t.Errorf("%s: want a %d, got %v", what, code, err)
	case want != "" && !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)):
		t.Errorf("%s: want an error mentioning %q, got %v", what, want, err)
	default:
		t.Logf("%s: refused as expected: %v", what, err)
	}
	if after := nsInventory(t, db); !reflect.DeepEqual(before, after) {
		t.Errorf("%s: the inventory changed: before %v, after %v", what, before, after)
	}
}

func nsMust[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func TestNetworkSetup(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	db := s.DB
	ctx := context.Background()

	// ---------------- A Basic zone, in CloudStack's order ----------------
	bz := nsMust[*cloudstack.CreateZoneResponse](t, "createZone basic")(cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "net-basic", "Basic")))

	pp := cs.Network.NewCreatePhysicalNetworkParams("basic-phys", bz.Id)
	pp.SetNetworkspeed("10G")
	bpn := nsMust[*cloudstack.CreatePhysicalNetworkResponse](t, "createPhysicalNetwork basic")(cs.Network.CreatePhysicalNetwork(pp))
	if bpn.Id == "" || bpn.Name != "basic-phys" || bpn.State != "Disabled" || bpn.Broadcastdomainrange != "POD" ||
		bpn.Isolationmethods != "VLAN" || bpn.Zoneid != bz.Id || bpn.Zonename != "net-basic" || bpn.Networkspeed != "10G" {
		t.Fatalf("basic physical network = %+v", bpn)
	}
	for _, tt := range []string{"Guest", "Management", "Storage"} {
		tp := cs.Usage.NewAddTrafficTypeParams(bpn.Id, tt)
		tp.SetKvmnetworklabel("cloudbr0")
		r := nsMust[*cloudstack.AddTrafficTypeResponse](t, "addTrafficType "+tt)(cs.Usage.AddTrafficType(tp))
		if r.Traffictype != tt || r.Physicalnetworkid != bpn.Id || r.Kvmnetworklabel != "cloudbr0" || r.Id == "" {
			t.Fatalf("addTrafficType %s = %+v", tt, r)
		}
	}
	lp := cs.Network.NewListNetworkServiceProvidersParams()
	lp.SetPhysicalnetworkid(bpn.Id)
	provs := nsMust[*cloudstack.ListNetworkServiceProvidersResponse](t, "listNetworkServiceProviders")(cs.Network.ListNetworkServiceProviders(lp))
	var names []string
	for _, p := range provs.NetworkServiceProviders {
		names = append(names, p.Name)
		if p.State != "Disabled" || p.Physicalnetworkid != bpn.Id || len(p.Servicelist) == 0 {
			t.Errorf("default provider %+v: want Disabled on %s with services", p, bpn.Id)
		}
	}
	sort.Strings(names)
	if want := "ConfigDrive,InternalLbVm,SecurityGroupProvider,VirtualRouter,VpcVirtualRouter"; provs.Count != 5 || strings.Join(names, ",") != want {
		t.Fatalf("basic zone providers = %d %v, want %s", provs.Count, names, want)
	}
	for _, p := range provs.NetworkServiceProviders {
		if p.Name != "VirtualRouter" && p.Name != "SecurityGroupProvider" {
			continue
		}
		up := cs.Network.NewUpdateNetworkServiceProviderParams(p.Id)
		up.SetState("Enabled")
		r := nsMust[*cloudstack.UpdateNetworkServiceProviderResponse](t, "updateNetworkServiceProvider")(cs.Network.UpdateNetworkServiceProvider(up))
		if r.State != "Enabled" || r.Name != p.Name || r.Id != p.Id {
			t.Fatalf("updateNetworkServiceProvider %s = %+v", p.Name, r)
		}
	}
	upn := cs.Network.NewUpdatePhysicalNetworkParams(bpn.Id)
	upn.SetState("Enabled")
	if r := nsMust[*cloudstack.UpdatePhysicalNetworkResponse](t, "updatePhysicalNetwork")(cs.Network.UpdatePhysicalNetwork(upn)); r.State != "Enabled" {
		t.Fatalf("updatePhysicalNetwork state = %+v", r)
	}

	podp := cs.Pod.NewCreatePodParams("basic-pod1", bz.Id)
	podp.SetGateway("192.168.10.1")
	podp.SetNetmask("255.255.255.0")
	podp.SetStartip("192.168.10.10")
	podp.SetEndip("192.168.10.50")
	bp1 := nsMust[*cloudstack.CreatePodResponse](t, "createPod basic")(cs.Pod.CreatePod(podp))
	if bp1.Id == "" || bp1.Gateway != "192.168.10.1" || bp1.Netmask != "255.255.255.0" || bp1.Zoneid != bz.Id ||
		len(bp1.Startip) != 1 || bp1.Startip[0] != "192.168.10.10" || bp1.Endip[0] != "192.168.10.50" ||
		bp1.Allocationstate != "Enabled" || len(bp1.Ipranges) != 1 || bp1.Ipranges[0].Cidr != "192.168.10.0/24" {
		t.Fatalf("createPod = %+v", bp1)
	}

	gr := cs.VLAN.NewCreateVlanIpRangeParams()
	gr.SetPodid(bp1.Id)
	gr.SetForvirtualnetwork(false)
	gr.SetGateway("192.168.10.1")
	gr.SetNetmask("255.255.255.0")
	gr.SetStartip("192.168.10.100")
	gr.SetEndip("192.168.10.199")
	guestRange := nsMust[*cloudstack.CreateVlanIpRangeResponse](t, "createVlanIpRange basic guest")(cs.VLAN.CreateVlanIpRange(gr))
	if guestRange.Forvirtualnetwork || guestRange.Podid != bp1.Id || guestRange.Zoneid != bz.Id || guestRange.Vlan != "untagged" ||
		guestRange.Physicalnetworkid != bpn.Id || guestRange.Cidr != "192.168.10.0/24" || guestRange.Startip != "192.168.10.100" {
		t.Fatalf("guest range = %+v", guestRange)
	}

	sp := cs.Network.NewCreateStorageNetworkIpRangeParams("172.16.10.1", "255.255.255.0", bp1.Id, "172.16.10.10")
	sp.SetEndip("172.16.10.19")
	sp.SetVlan(200)
	srange := nsMust[*cloudstack.CreateStorageNetworkIpRangeResponse](t, "createStorageNetworkIpRange")(cs.Network.CreateStorageNetworkIpRange(sp))
	if srange.Id == "" || srange.Podid != bp1.Id || srange.Zoneid != bz.Id || srange.Vlan != 200 || srange.Startip != "172.16.10.10" || srange.Endip != "172.16.10.19" {
		t.Fatalf("storage range = %+v", srange)
	}

	ez := cs.Zone.NewUpdateZoneParams(bz.Id)
	ez.SetAllocationstate("Enabled")
	nsMust[*cloudstack.UpdateZoneResponse](t, "enable basic zone")(cs.Zone.UpdateZone(ez))

	// ---------------- An Advanced zone ----------------
	az := nsMust[*cloudstack.CreateZoneResponse](t, "createZone advanced")(cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "net-adv", "Advanced")))
	pp = cs.Network.NewCreatePhysicalNetworkParams("adv-guest", az.Id)
	pp.SetIsolationmethods([]string{"VLAN"})
	pp.SetVlan("300-349,100-199")
	pp.SetTags([]string{"fast"})
	apn1 := nsMust[*cloudstack.CreatePhysicalNetworkResponse](t, "createPhysicalNetwork adv-guest")(cs.Network.CreatePhysicalNetwork(pp))
	if apn1.Vlan != "100-199,300-349" || apn1.Broadcastdomainrange != "ZONE" || apn1.Tags != "fast" {
		t.Fatalf("adv-guest = %+v", apn1)
	}
	apn2 := nsMust[*cloudstack.CreatePhysicalNetworkResponse](t, "createPhysicalNetwork adv-public")(cs.Network.CreatePhysicalNetwork(cs.Network.NewCreatePhysicalNetworkParams("adv-public", az.Id)))
	for pn, tts := range map[string][]string{apn1.Id: {"Guest", "Management"}, apn2.Id: {"Public", "Storage"}} {
		for _, tt := range tts {
			nsMust[*cloudstack.AddTrafficTypeResponse](t, "addTrafficType "+tt)(cs.Usage.AddTrafficType(cs.Usage.NewAddTrafficTypeParams(pn, tt)))
		}
		up := cs.Network.NewUpdatePhysicalNetworkParams(pn)
		up.SetState("Enabled")
		nsMust[*cloudstack.UpdatePhysicalNetworkResponse](t, "enable physical network")(cs.Network.UpdatePhysicalNetwork(up))
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM op_dc_vnet_alloc v JOIN physical_networks p ON p.id = v.physical_network_id WHERE p.uuid = ?", apn1.Id); n != 150 {
		t.Fatalf("adv-guest vnet rows = %d, want 150", n)
	}
	podp = cs.Pod.NewCreatePodParams("adv-pod1", az.Id)
	podp.SetGateway("10.20.0.1")
	podp.SetNetmask("255.255.255.0")
	podp.SetStartip("10.20.0.2")
	podp.SetEndip("10.20.0.30")
	ap1 := nsMust[*cloudstack.CreatePodResponse](t, "createPod advanced")(cs.Pod.CreatePod(podp))

	pr := cs.VLAN.NewCreateVlanIpRangeParams()
	pr.SetZoneid(az.Id)
	pr.SetVlan("50")
	pr.SetForvirtualnetwork(true)
	pr.SetGateway("203.0.113.1")
	pr.SetNetmask("255.255.255.0")
	pr.SetStartip("203.0.113.10")
	pr.SetEndip("203.0.113.60")
	pub1 := nsMust[*cloudstack.CreateVlanIpRangeResponse](t, "createVlanIpRange public")(cs.VLAN.CreateVlanIpRange(pr))
	if !pub1.Forvirtualnetwork || pub1.Vlan != "vlan://50" || pub1.Physicalnetworkid != apn2.Id || pub1.Podid != "" || pub1.Zoneid != az.Id {
		t.Fatalf("public range = %+v", pub1)
	}
	doms := nsMust[*cloudstack.ListDomainsResponse](t, "listDomains")(cs.Domain.ListDomains(cs.Domain.NewListDomainsParams()))
	var rootID string
	for _, d := range doms.Domains {
		if d.Name == "ROOT" {
			rootID = d.Id
		}
	}
	pr = cs.VLAN.NewCreateVlanIpRangeParams()
	pr.SetZoneid(az.Id)
	pr.SetGateway("198.51.100.1")
	pr.SetNetmask("255.255.255.128")
	pr.SetStartip("198.51.100.2")
	pr.SetEndip("198.51.100.20")
	pr.SetAccount("admin")
	pr.SetDomainid(rootID)
	pub2 := nsMust[*cloudstack.CreateVlanIpRangeResponse](t, "createVlanIpRange dedicated")(cs.VLAN.CreateVlanIpRange(pr))
	if pub2.Account != "admin" || pub2.Domainid != rootID || pub2.Vlan != "untagged" || pub2.Cidr != "198.51.100.0/25" {
		t.Fatalf("dedicated range = %+v", pub2)
	}
	ez = cs.Zone.NewUpdateZoneParams(az.Id)
	ez.SetAllocationstate("Enabled")
	nsMust[*cloudstack.UpdateZoneResponse](t, "enable advanced zone")(cs.Zone.UpdateZone(ez))

	// ---------------- Every list shows what was made ----------------
	pl := nsMust[*cloudstack.ListPhysicalNetworksResponse](t, "listPhysicalNetworks")(cs.Network.ListPhysicalNetworks(cs.Network.NewListPhysicalNetworksParams()))
	if pl.Count != 3 {
		t.Errorf("listPhysicalNetworks count = %d, want 3", pl.Count)
	}
	plz := cs.Network.NewListPhysicalNetworksParams()
	plz.SetZoneid(az.Id)
	if pl = nsMust[*cloudstack.ListPhysicalNetworksResponse](t, "listPhysicalNetworks zone")(cs.Network.ListPhysicalNetworks(plz)); pl.Count != 2 {
		t.Errorf("listPhysicalNetworks in the advanced zone = %d, want 2", pl.Count)
	}
	for _, pn := range pl.PhysicalNetworks {
		if pn.State != "Enabled" || pn.Zonename != "net-adv" {
			t.Errorf("physical network %+v: want Enabled in net-adv", pn)
		}
	}
	for pn, want := range map[string]int{bpn.Id: 3, apn1.Id: 2, apn2.Id: 2} {
		tl := nsMust[*cloudstack.ListTrafficTypesResponse](t, "listTrafficTypes")(cs.Usage.ListTrafficTypes(cs.Usage.NewListTrafficTypesParams(pn)))
		if tl.Count != want {
			t.Errorf("listTrafficTypes %s = %d, want %d", pn, tl.Count, want)
		}
		for _, tt := range tl.TrafficTypes {
			if tt.Physicalnetworkid != pn || tt.Name == "" || tt.Id == "" {
				t.Errorf("traffic type %+v", tt)
			}
		}
	}
	lp = cs.Network.NewListNetworkServiceProvidersParams()
	lp.SetPhysicalnetworkid(apn1.Id)
	if provs = nsMust[*cloudstack.ListNetworkServiceProvidersResponse](t, "providers adv")(cs.Network.ListNetworkServiceProviders(lp)); provs.Count != 4 {
		t.Errorf("advanced zone providers = %d, want 4 (no security groups)", provs.Count)
	}
	lp = cs.Network.NewListNetworkServiceProvidersParams()
	lp.SetState("Enabled")
	if provs = nsMust[*cloudstack.ListNetworkServiceProvidersResponse](t, "providers enabled")(cs.Network.ListNetworkServiceProviders(lp)); provs.Count != 2 {
		t.Errorf("enabled providers = %d, want 2", provs.Count)
	}
	pods := nsMust[*cloudstack.ListPodsResponse](t, "listPods")(cs.Pod.ListPods(cs.Pod.NewListPodsParams()))
	if pods.Count != 2 {
		t.Errorf("listPods = %d, want 2", pods.Count)
	}
	lpod := cs.Pod.NewListPodsParams()
	lpod.SetZoneid(az.Id)
	if pods = nsMust[*cloudstack.ListPodsResponse](t, "listPods zone")(cs.Pod.ListPods(lpod)); pods.Count != 1 || pods.Pods[0].Id != ap1.Id ||
		pods.Pods[0].Startip[0] != "10.20.0.2" || pods.Pods[0].Endip[0] != "10.20.0.30" || pods.Pods[0].Zonename != "net-adv" {
		t.Errorf("listPods zone=adv = %+v", pods)
	}
	vl := nsMust[*cloudstack.ListVlanIpRangesResponse](t, "listVlanIpRanges")(cs.VLAN.ListVlanIpRanges(cs.VLAN.NewListVlanIpRangesParams()))
	if vl.Count != 3 {
		t.Errorf("listVlanIpRanges = %d, want 3", vl.Count)
	}
	lv := cs.VLAN.NewListVlanIpRangesParams()
	lv.SetZoneid(az.Id)
	lv.SetForvirtualnetwork(true)
	if vl = nsMust[*cloudstack.ListVlanIpRangesResponse](t, "listVlanIpRanges public")(cs.VLAN.ListVlanIpRanges(lv)); vl.Count != 2 {
		t.Errorf("public ranges of the advanced zone = %d, want 2", vl.Count)
	}
	lv = cs.VLAN.NewListVlanIpRangesParams()
	lv.SetPodid(bp1.Id)
	if vl = nsMust[*cloudstack.ListVlanIpRangesResponse](t, "listVlanIpRanges pod")(cs.VLAN.ListVlanIpRanges(lv)); vl.Count != 1 || vl.VlanIpRanges[0].Id != guestRange.Id || vl.VlanIpRanges[0].Podname != "basic-pod1" {
		t.Errorf("ranges of basic-pod1 = %+v", vl)
	}
	lv = cs.VLAN.NewListVlanIpRangesParams()
	lv.SetVlan("50")
	if vl = nsMust[*cloudstack.ListVlanIpRangesResponse](t, "listVlanIpRanges vlan")(cs.VLAN.ListVlanIpRanges(lv)); vl.Count != 1 || vl.VlanIpRanges[0].Id != pub1.Id {
		t.Errorf("ranges on vlan 50 = %+v", vl)
	}
	sl := nsMust[*cloudstack.ListStorageNetworkIpRangeResponse](t, "listStorageNetworkIpRange")(cs.Network.ListStorageNetworkIpRange(cs.Network.NewListStorageNetworkIpRangeParams()))
	if sl.Count != 1 || sl.StorageNetworkIpRange[0].Id != srange.Id || sl.StorageNetworkIpRange[0].Vlan != 200 {
		t.Errorf("listStorageNetworkIpRange = %+v", sl)
	}
	inv := nsInventory(t, db)
	for k, want := range map[string]int{
		"physical_networks": 3, "traffic_types": 7, "service_providers": 13, "vnets": 150, "pods": 2,
		"pod_ips": 41 + 29, "vlans": 3, "ip_addresses": 100 + 51 + 19, "storage_ranges": 1, "storage_ips": 10,
		"enabled_physnets": 3,
	} {
		if inv[k] != want {
			t.Errorf("inventory %s = %d, want %d", k, inv[k], want)
		}
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM events WHERE type IN ('PHYSICAL.NETWORK.CREATE', 'TRAFFIC.TYPE.CREATE', 'POD.CREATE', 'VLAN.IP.RANGE.CREATE', 'STORAGE.IP.RANGE.CREATE')"); n != 3+7+2+3+1 {
		t.Errorf("creation events = %d, want 16", n)
	}

	// ---------------- Every rule refuses, and changes nothing ----------------
	nsRefused(t, db, "overlapping public range", 431, "overlaps", func() error {
		p := cs.VLAN.NewCreateVlanIpRangeParams()
		p.SetZoneid(az.Id)
		p.SetVlan("50")
		p.SetGateway("203.0.113.1")
		p.SetNetmask("255.255.255.0")
		p.SetStartip("203.0.113.55")
		p.SetEndip("203.0.113.70")
		_, err := cs.VLAN.CreateVlanIpRange(p)
		return err
	})
	nsRefused(t, db, "public range on a guest VLAN", 431, "guest VLAN", func() error {
		p := cs.VLAN.NewCreateVlanIpRangeParams()
		p.SetZoneid(az.Id)
		p.SetVlan("120")
		p.SetGateway("203.0.114.1")
		p.SetNetmask("255.255.255.0")
		p.SetStartip("203.0.114.10")
		_, err := cs.VLAN.CreateVlanIpRange(p)
		return err
	})
	nsRefused(t, db, "public range with the gateway inside", 431, "contains the gateway", func() error {
		p := cs.VLAN.NewCreateVlanIpRangeParams()
		p.SetZoneid(az.Id)
		p.SetGateway("203.0.115.1")
		p.SetNetmask("255.255.255.0")
		p.SetStartip("203.0.115.1")
		p.SetEndip("203.0.115.9")
		_, err := cs.VLAN.CreateVlanIpRange(p)
		return err
	})
	nsRefused(t, db, "public range larger than a /16", 431, "at most 65536", func() error {
		p := cs.VLAN.NewCreateVlanIpRangeParams()
		p.SetZoneid(az.Id)
		p.SetGateway("100.64.0.1")
		p.SetNetmask("255.254.0.0")
		p.SetStartip("100.64.0.2")
		p.SetEndip("100.65.255.254")
		_, err := cs.VLAN.CreateVlanIpRange(p)
		return err
	})
	nsRefused(t, db, "public range in a Basic zone", 431, "Basic zone", func() error {
		p := cs.VLAN.NewCreateVlanIpRangeParams()
		p.SetZoneid(bz.Id)
		p.SetGateway("203.0.116.1")
		p.SetNetmask("255.255.255.0")
		p.SetStartip("203.0.116.10")
		_, err := cs.VLAN.CreateVlanIpRange(p)
		return err
	})
	nsRefused(t, db, "range over a pod's reserved range", 431, "reserved", func() error {
		p := cs.VLAN.NewCreateVlanIpRangeParams()
		p.SetZoneid(az.Id)
		p.SetVlan("60")
		p.SetGateway("192.168.10.1")
		p.SetNetmask("255.255.255.0")
		p.SetStartip("192.168.10.45")
		p.SetEndip("192.168.10.60")
		_, err := cs.VLAN.CreateVlanIpRange(p)
		return err
	})
	nsRefused(t, db, "shared network range of a missing network", 431, "network", func() error {
		p := cs.VLAN.NewCreateVlanIpRangeParams()
		p.SetNetworkid("0b7c4a8e-1111-4222-8333-444455556666")
		p.SetGateway("10.50.0.1")
		p.SetNetmask("255.255.255.0")
		p.SetStartip("10.50.0.10")
		_, err := cs.VLAN.CreateVlanIpRange(p)
		return err
	})
	newPod := func(zone, name, gw, mask, start, end string) func() error {
		return func() error {
			p := cs.Pod.NewCreatePodParams(name, zone)
			p.SetGateway(gw)
			p.SetNetmask(mask)
			p.SetStartip(start)
			p.SetEndip(end)
			_, err := cs.Pod.CreatePod(p)
			return err
		}
	}
	nsRefused(t, db, "reserved range reused by a pod of another zone", 431, "unique across the cloud",
		newPod(az.Id, "adv-pod-dup", "192.168.10.1", "255.255.255.0", "192.168.10.40", "192.168.10.60"))
	nsRefused(t, db, "pod subnet overlapping another pod's in the zone", 431, "conflicts",
		newPod(bz.Id, "basic-pod-dup", "192.168.10.1", "255.255.255.0", "192.168.10.60", "192.168.10.70"))
	nsRefused(t, db, "reserved range outside the pod CIDR", 431, "not inside the subnet",
		newPod(az.Id, "adv-pod-out", "10.30.0.1", "255.255.255.0", "10.31.0.5", "10.31.0.9"))
	nsRefused(t, db, "gateway inside the reserved range", 431, "contains the gateway",
		newPod(az.Id, "adv-pod-gw", "10.30.0.1", "255.255.255.0", "10.30.0.1", "10.30.0.20"))
	nsRefused(t, db, "reserved range start after end", 431, "after",
		newPod(az.Id, "adv-pod-rev", "10.30.0.1", "255.255.255.0", "10.30.0.20", "10.30.0.10"))
	nsRefused(t, db, "reserved range over a public range", 431, "overlaps",
		newPod(az.Id, "adv-pod-pub", "203.0.113.1", "255.255.255.0", "203.0.113.2", "203.0.113.12"))
	nsRefused(t, db, "duplicate pod name", 431, "already exists",
		newPod(az.Id, "adv-pod1", "10.40.0.1", "255.255.255.0", "10.40.0.2", "10.40.0.9"))
	nsRefused(t, db, "second physical network in a Basic zone", 431, "exactly one", func() error {
		_, err := cs.Network.CreatePhysicalNetwork(cs.Network.NewCreatePhysicalNetworkParams("basic-phys-2", bz.Id))
		return err
	})
	nsRefused(t, db, "duplicate traffic type", 431, "already carries", func() error {
		_, err := cs.Usage.AddTrafficType(cs.Usage.NewAddTrafficTypeParams(bpn.Id, "guest"))
		return err
	})
	nsRefused(t, db, "Public traffic on a second physical network of the zone", 431, "already carried", func() error {
		_, err := cs.Usage.AddTrafficType(cs.Usage.NewAddTrafficTypeParams(apn1.Id, "Public"))
		return err
	})
	nsRefused(t, db, "unknown traffic type", 431, "traffictype", func() error {
		_, err := cs.Usage.AddTrafficType(cs.Usage.NewAddTrafficTypeParams(apn1.Id, "Control-Plane"))
		return err
	})
	nsRefused(t, db, "overlapping VLAN range on a new physical network", 431, "overlaps", func() error {
		p := cs.Network.NewCreatePhysicalNetworkParams("adv-overlap", az.Id)
		p.SetVlan("150-160")
		_, err := cs.Network.CreatePhysicalNetwork(p)
		return err
	})
	nsRefused(t, db, "overlapping VLAN range on update", 431, "overlaps", func() error {
		p := cs.Network.NewUpdatePhysicalNetworkParams(apn2.Id)
		p.SetVlan("340-360")
		_, err := cs.Network.UpdatePhysicalNetwork(p)
		return err
	})
	nsRefused(t, db, "VLAN id out of bounds", 431, "out of bounds", func() error {
		p := cs.Network.NewCreatePhysicalNetworkParams("adv-bounds", az.Id)
		p.SetVlan("4000-4095")
		_, err := cs.Network.CreatePhysicalNetwork(p)
		return err
	})
	nsRefused(t, db, "two isolation methods", 431, "only one", func() error {
		p := cs.Network.NewCreatePhysicalNetworkParams("adv-two", az.Id)
		p.SetIsolationmethods([]string{"VLAN", "GRE"})
		_, err := cs.Network.CreatePhysicalNetwork(p)
		return err
	})
	nsRefused(t, db, "storage range over a pod's reserved range", 431, "reserved", func() error {
		p := cs.Network.NewCreateStorageNetworkIpRangeParams("10.20.0.1", "255.255.255.0", ap1.Id, "10.20.0.25")
		p.SetEndip("10.20.0.40")
		_, err := cs.Network.CreateStorageNetworkIpRange(p)
		return err
	})
	nsRefused(t, db, "storage range overlapping the zone's storage range", 431, "storage network range", func() error {
		p := cs.Network.NewCreateStorageNetworkIpRangeParams("172.16.10.1", "255.255.255.0", bp1.Id, "172.16.10.15")
		p.SetEndip("172.16.10.25")
		_, err := cs.Network.CreateStorageNetworkIpRange(p)
		return err
	})

	// A pod with a cluster is not deleted.
	var bp1Row models.Pod
	if err := db.NewSelect().Model(&bp1Row).Where("uuid = ?", bp1.Id).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	cl := &models.Cluster{
		UUID: models.NewUUID(), Name: "basic-cluster", ZoneID: bp1Row.ZoneID, PodID: bp1Row.ID, HypervisorType: models.HypervisorSimulator,
		ClusterType: models.ClusterCloudManaged, AllocationState: models.AllocationEnabled, ManagedState: "Managed",
		CPUOvercommitRatio: 1, MemOvercommitRatio: 1, Created: models.Now(),
	}
	if _, err := db.NewInsert().Model(cl).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	nsRefused(t, db, "deletePod with a cluster", 536, "cluster", func() error {
		_, err := cs.Pod.DeletePod(cs.Pod.NewDeletePodParams(bp1.Id))
		return err
	})
	if _, err := db.NewDelete().Model(cl).WherePK().ForceDelete().Exec(ctx); err != nil {
		t.Fatal(err)
	}
	nsRefused(t, db, "deletePod with a guest range", 536, "guest IP range", func() error {
		_, err := cs.Pod.DeletePod(cs.Pod.NewDeletePodParams(bp1.Id))
		return err
	})

	// A range with an allocated address is not deleted; freed, it is.
	var ip models.IPAddress
	if err := db.QueryRowContext(ctx, "SELECT a.id, a.public_ip_address FROM ip_addresses a JOIN vlans v ON v.id = a.vlan_id WHERE v.uuid = ? ORDER BY a.id LIMIT 1",
		pub1.Id).Scan(&ip.ID, &ip.PublicIPAddress); err != nil {
		t.Fatal(err)
	}
	if _, err := db.NewUpdate().Model(&ip).Set("state = ?", models.IPAllocated).WherePK().Exec(ctx); err != nil {
		t.Fatal(err)
	}
	nsRefused(t, db, "deleteVlanIpRange with an allocated address", 536, ip.PublicIPAddress, func() error {
		_, err := cs.VLAN.DeleteVlanIpRange(cs.VLAN.NewDeleteVlanIpRangeParams(pub1.Id))
		return err
	})
	if _, err := db.NewUpdate().Model(&ip).Set("state = ?", models.IPFree).WherePK().Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := cs.VLAN.DeleteVlanIpRange(cs.VLAN.NewDeleteVlanIpRangeParams(pub1.Id)); err != nil || !r.Success {
		t.Fatalf("deleteVlanIpRange: %v %+v", err, r)
	}
	if inv := nsInventory(t, db); inv["vlans"] != 2 || inv["ip_addresses"] != 100+19 {
		t.Errorf("after deleteVlanIpRange: %v", inv)
	}

	// A VLAN range with an allocated vnet is not removed; the rest is.
	if _, err := db.ExecContext(ctx, "UPDATE op_dc_vnet_alloc SET taken = ?, reservation_id = 'r1' WHERE vnet = '120' AND physical_network_id = (SELECT id FROM physical_networks WHERE uuid = ?)",
		models.Now(), apn1.Id); err != nil {
		t.Fatal(err)
	}
	nsRefused(t, db, "removing a VLAN range with an allocated vnet", 536, "120", func() error {
		p := cs.Network.NewUpdatePhysicalNetworkParams(apn1.Id)
		p.SetVlan("100-110,300-349")
		_, err := cs.Network.UpdatePhysicalNetwork(p)
		return err
	})
	up := cs.Network.NewUpdatePhysicalNetworkParams(apn1.Id)
	up.SetVlan("100-130,300-359")
	if r, err := cs.Network.UpdatePhysicalNetwork(up); err != nil || r.Vlan != "100-130,300-359" {
		t.Fatalf("updatePhysicalNetwork vlan: %v %+v", err, r)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM op_dc_vnet_alloc v JOIN physical_networks p ON p.id = v.physical_network_id WHERE p.uuid = ?", apn1.Id); n != 31+60 {
		t.Errorf("vnets after update = %d, want 91", n)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM op_dc_vnet_alloc WHERE vnet = '120' AND taken IS NOT NULL"); n != 1 {
		t.Errorf("the allocated vnet 120 lost its allocation: %d", n)
	}

	// A storage range with an address in use is not deleted; then it is.
	if _, err := db.ExecContext(ctx, "UPDATE op_dc_storage_network_ip_address SET taken = ? WHERE ip_address = '172.16.10.12'", models.Now()); err != nil {
		t.Fatal(err)
	}
	nsRefused(t, db, "deleteStorageNetworkIpRange in use", 536, "in use", func() error {
		_, err := cs.Network.DeleteStorageNetworkIpRange(cs.Network.NewDeleteStorageNetworkIpRangeParams(srange.Id))
		return err
	})
	if _, err := db.ExecContext(ctx, "UPDATE op_dc_storage_network_ip_address SET taken = NULL"); err != nil {
		t.Fatal(err)
	}
	if r, err := cs.Network.DeleteStorageNetworkIpRange(cs.Network.NewDeleteStorageNetworkIpRangeParams(srange.Id)); err != nil || !r.Success {
		t.Fatalf("deleteStorageNetworkIpRange: %v %+v", err, r)
	}

	// updatePod moves the reserved range; the rows follow.
	upp := cs.Pod.NewUpdatePodParams(ap1.Id)
	upp.SetStartip("10.20.0.10")
	upp.SetEndip("10.20.0.40")
	upp.SetName("adv-pod-renamed")
	if _, err := cs.Pod.UpdatePod(upp); err != nil {
		t.Fatalf("updatePod: %v", err)
	}
	lpod = cs.Pod.NewListPodsParams()
	lpod.SetId(ap1.Id)
	if pods = nsMust[*cloudstack.ListPodsResponse](t, "listPods id")(cs.Pod.ListPods(lpod)); pods.Count != 1 || pods.Pods[0].Name != "adv-pod-renamed" ||
		pods.Pods[0].Startip[0] != "10.20.0.10" || pods.Pods[0].Endip[0] != "10.20.0.40" {
		t.Errorf("after updatePod: %+v", pods)
	}
	if n := nsCount(t, db, "SELECT COUNT(*) FROM op_dc_ip_address_alloc a JOIN pods p ON p.id = a.pod_id WHERE p.uuid = ?", ap1.Id); n != 31 {
		t.Errorf("reserved rows of the updated pod = %d, want 31", n)
	}
	nsRefused(t, db, "updatePod onto another pod's reserved range", 431, "unique across the cloud", func() error {
		p := cs.Pod.NewUpdatePodParams(ap1.Id)
		p.SetGateway("192.168.10.1")
		p.SetStartip("192.168.10.20")
		p.SetEndip("192.168.10.30")
		_, err := cs.Pod.UpdatePod(p)
		return err
	})

	// A free pod is deleted and its reserved addresses released.
	podp = cs.Pod.NewCreatePodParams("basic-pod2", bz.Id)
	podp.SetGateway("192.168.20.1")
	podp.SetNetmask("255.255.255.0")
	podp.SetStartip("192.168.20.10")
	podp.SetEndip("192.168.20.20")
	bp2 := nsMust[*cloudstack.CreatePodResponse](t, "createPod basic-pod2")(cs.Pod.CreatePod(podp))
	before := nsInventory(t, db)
	if r, err := cs.Pod.DeletePod(cs.Pod.NewDeletePodParams(bp2.Id)); err != nil || !r.Success {
		t.Fatalf("deletePod: %v %+v", err, r)
	}
	after := nsInventory(t, db)
	if after["pods"] != before["pods"]-1 || after["pod_ips"] != before["pod_ips"]-11 {
		t.Errorf("deletePod: before %v after %v", before, after)
	}

	// A spare physical network: traffic type removed, then the network.
	pp = cs.Network.NewCreatePhysicalNetworkParams("adv-spare", az.Id)
	pp.SetVlan("500-509")
	spare := nsMust[*cloudstack.CreatePhysicalNetworkResponse](t, "createPhysicalNetwork spare")(cs.Network.CreatePhysicalNetwork(pp))
	tp := cs.Usage.NewAddTrafficTypeParams(spare.Id, "Guest")
	tp.SetVmwarenetworklabel("vSwitch1")
	stt := nsMust[*cloudstack.AddTrafficTypeResponse](t, "addTrafficType spare")(cs.Usage.AddTrafficType(tp))
	utp := cs.Usage.NewUpdateTrafficTypeParams(stt.Id)
	utp.SetKvmnetworklabel("cloudbr1")
	if r, err := cs.Usage.UpdateTrafficType(utp); err != nil || r.Kvmnetworklabel != "cloudbr1" || r.Vmwarenetworklabel != "vSwitch1" {
		t.Fatalf("updateTrafficType: %v %+v", err, r)
	}
	if r, err := cs.Usage.DeleteTrafficType(cs.Usage.NewDeleteTrafficTypeParams(stt.Id)); err != nil || !r.Success {
		t.Fatalf("deleteTrafficType: %v %+v", err, r)
	}
	before = nsInventory(t, db)
	if r, err := cs.Network.DeletePhysicalNetwork(cs.Network.NewDeletePhysicalNetworkParams(spare.Id)); err != nil || !r.Success {
		t.Fatalf("deletePhysicalNetwork: %v %+v", err, r)
	}
	after = nsInventory(t, db)
	if after["physical_networks"] != before["physical_networks"]-1 || after["vnets"] != before["vnets"]-10 || after["service_providers"] != before["service_providers"]-4 {
		t.Errorf("deletePhysicalNetwork: before %v after %v", before, after)
	}
	nsRefused(t, db, "deleteTrafficType Public with a public range", 536, "public IP range", func() error {
		tl, err := cs.Usage.ListTrafficTypes(cs.Usage.NewListTrafficTypesParams(apn2.Id))
		if err != nil {
			return err
		}
		for _, tt := range tl.TrafficTypes {
			if tt.Name == "Public" {
				_, err := cs.Usage.DeleteTrafficType(cs.Usage.NewDeleteTrafficTypeParams(tt.Id))
				return err
			}
		}
		return fmt.Errorf("no Public traffic type listed")
	})
	nsRefused(t, db, "deletePhysicalNetwork with a public range", 536, "IP range", func() error {
		_, err := cs.Network.DeletePhysicalNetwork(cs.Network.NewDeletePhysicalNetworkParams(apn2.Id))
		return err
	})
}
