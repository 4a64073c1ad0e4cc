package tests

import (
	"context"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

func TestZones(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client

	p := cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "zone-basic", "Basic")
	basic, err := cs.Zone.CreateZone(p)
	if err != nil {
		t.Fatalf("createZone: %v", err)
	}
	if basic.Name != "zone-basic" || basic.Networktype != "Basic" || basic.Allocationstate != "Disabled" || basic.Internaldns1 != "10.0.0.2" {
		t.Fatalf("created zone = %+v", basic)
	}

	p = cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "zone-adv", "Advanced")
	p.SetGuestcidraddress("10.10.0.0/16")
	p.SetLocalstorageenabled(true)
	adv, err := cs.Zone.CreateZone(p)
	if err != nil {
		t.Fatalf("createZone advanced: %v", err)
	}
	if adv.Guestcidraddress != "10.10.0.0/16" || !adv.Localstorageenabled {
		t.Fatalf("advanced zone = %+v", adv)
	}

	// Bad input: clear 431s, nothing written.
	for name, params := range map[string]*cloudstack.CreateZoneParams{
		"bad network type": cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "z1", "Fancy"),
		"dns not an IP":    cs.Zone.NewCreateZoneParams("eight", "10.0.0.2", "z2", "Basic"),
		"duplicate name":   cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "zone-basic", "Basic"),
	} {
		_, err := cs.Zone.CreateZone(params)
		if err == nil || !strings.Contains(err.Error(), "431") {
			t.Errorf("%s: want 431, got %v", name, err)
		}
	}
	bad := cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", "z3", "Basic")
	bad.SetGuestcidraddress("10.0.0.0/99")
	if _, err := cs.Zone.CreateZone(bad); err == nil || !strings.Contains(err.Error(), "guestcidraddress") {
		t.Errorf("bad CIDR: want 431 naming guestcidraddress, got %v", err)
	}

	list, err := cs.Zone.ListZones(cs.Zone.NewListZonesParams())
	if err != nil {
		t.Fatal(err)
	}
	if list.Count != 2 {
		t.Fatalf("listZones count = %d, want 2 (no half-written zone from the bad calls)", list.Count)
	}
	lp := cs.Zone.NewListZonesParams()
	lp.SetKeyword("adv")
	if list, err = cs.Zone.ListZones(lp); err != nil || list.Count != 1 || list.Zones[0].Id != adv.Id {
		t.Fatalf("listZones keyword=adv: %v %+v", err, list)
	}
	lp = cs.Zone.NewListZonesParams()
	lp.SetKeyword("%' OR '1'='1")
	if list, err = cs.Zone.ListZones(lp); err != nil || list.Count != 0 {
		t.Fatalf("listZones with SQL metacharacters: %v %+v", err, list)
	}
	lp = cs.Zone.NewListZonesParams()
	lp.SetPagesize(1)
	lp.SetPage(2)
	if list, err = cs.Zone.ListZones(lp); err != nil || list.Count != 2 || len(list.Zones) != 1 || list.Zones[0].Id != adv.Id {
		t.Fatalf("listZones page 2 of size 1: %v %+v", err, list)
	}

	up := cs.Zone.NewUpdateZoneParams(basic.Id)
	up.SetAllocationstate("Enabled")
	up.SetDns2("1.1.1.1")
	// The SDK decodes updateZone's answer at the top level, CloudStack's
	// clients under "zone": Nimbus answers both.
	upd, err := cs.Zone.UpdateZone(up)
	if err != nil || upd.Allocationstate != "Enabled" || upd.Dns2 != "1.1.1.1" || upd.Id != basic.Id {
		t.Fatalf("updateZone: %v %+v", err, upd)
	}
	lp = cs.Zone.NewListZonesParams()
	lp.SetId(basic.Id)
	if list, err = cs.Zone.ListZones(lp); err != nil || list.Count != 1 || list.Zones[0].Allocationstate != "Enabled" || list.Zones[0].Dns2 != "1.1.1.1" {
		t.Fatalf("after updateZone: %v %+v", err, list)
	}

	// A zone that holds a pod is not deleted.
	ctx := context.Background()
	var zrow models.Zone
	if err := s.DB.NewSelect().Model(&zrow).Where("uuid = ?", adv.Id).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	pod := &models.Pod{UUID: models.NewUUID(), Name: "pod1", ZoneID: zrow.ID, AllocationState: "Enabled", Created: models.Now()}
	if _, err := s.DB.NewInsert().Model(pod).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Zone.DeleteZone(cs.Zone.NewDeleteZoneParams(adv.Id)); err == nil || !strings.Contains(err.Error(), "536") {
		t.Fatalf("deleteZone with a pod: want 536, got %v", err)
	}
	if _, err := cs.Zone.DeleteZone(cs.Zone.NewDeleteZoneParams(basic.Id)); err != nil {
		t.Fatalf("deleteZone: %v", err)
	}
	if list, err = cs.Zone.ListZones(cs.Zone.NewListZonesParams()); err != nil || list.Count != 1 {
		t.Fatalf("after delete: %v %+v", err, list)
	}
}
