package tests

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"golang.org/x/crypto/ssh"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// arID returns the internal id of the row with uuid in table.
func arID(t *testing.T, s *testenv.Stack, table, uuid string) int64 {
	t.Helper()
	var id int64
	if err := s.DB.NewSelect().Table(table).Column("id").Where("uuid = ?", uuid).Limit(1).Scan(context.Background(), &id); err != nil {
		t.Fatalf("id of %s %s: %v", table, uuid, err)
	}
	return id
}

// arVM inserts a user VM row for account (VMs are deployed by another
// part; the commands here only need the row).
func arVM(t *testing.T, s *testenv.Stack, accountUUID, zoneUUID, name, state string, cpu, ram int) string {
	t.Helper()
	acct := arID(t, s, "accounts", accountUUID)
	var dom int64
	if err := s.DB.NewSelect().Table("accounts").Column("domain_id").Where("id = ?", acct).Scan(context.Background(), &dom); err != nil {
		t.Fatal(err)
	}
	vm := &models.VMInstance{
		UUID: models.NewUUID(), Name: name, DisplayName: name, InstanceName: "i-" + name, Type: models.VMTypeUser, State: state,
		ZoneID: arID(t, s, "zones", zoneUUID), ServiceOfferingID: arID(t, s, "service_offerings", models.ServiceOfferingSmallUUID),
		CPU: cpu, Speed: 500, RAMSize: ram, AccountID: acct, DomainID: dom, Created: models.Now(),
	}
	if _, err := s.DB.NewInsert().Model(vm).Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	return vm.UUID
}

func arNames[T any](items []T, name func(T) string) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, name(it))
	}
	sort.Strings(out)
	return out
}

func arWant(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func TestAccountResources(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	root := s.Client
	d1 := tenCreateDomain(t, root, "resd1", "")
	dadmin := tenCreateAccount(t, s, root, "resdadmin", d1.Id, models.AccountTypeDomainAdmin)
	u1 := tenCreateAccount(t, s, root, "resu1", d1.Id, models.AccountTypeUser)
	u2 := tenCreateAccount(t, s, root, "resu2", d1.Id, models.AccountTypeUser)
	zone, err := root.Zone.CreateZone(root.Zone.NewCreateZoneParams("8.8.8.8", "8.8.4.4", "reszone", "Advanced"))
	if err != nil {
		t.Fatalf("createZone: %v", err)
	}
	fingerprintRe := regexp.MustCompile(`^([0-9a-f]{2}:){15}[0-9a-f]{2}$`)

	t.Run("ssh keys", func(t *testing.T) {
		c1 := u1.Client.SSH
		k1, err := c1.CreateSSHKeyPair(c1.NewCreateSSHKeyPairParams("k1"))
		if err != nil {
			t.Fatalf("createSSHKeyPair: %v", err)
		}
		if k1.Name != "k1" || k1.Account != "resu1" || k1.Domainid != d1.Id || k1.Domain != "resd1" || k1.Id == "" || !fingerprintRe.MatchString(k1.Fingerprint) {
			t.Fatalf("created key pair = %+v", k1)
		}
		block, _ := pem.Decode([]byte(k1.Privatekey))
		if block == nil || block.Type != "RSA PRIVATE KEY" {
			t.Fatalf("private key is not an RSA PEM: %.60q", k1.Privatekey)
		}
		priv, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil || priv.N.BitLen() != 2048 {
			t.Fatalf("private key: %v", err)
		}
		pub, _ := ssh.NewPublicKey(&priv.PublicKey)
		if fp := ssh.FingerprintLegacyMD5(pub); fp != k1.Fingerprint {
			t.Fatalf("fingerprint %s, want MD5 of the key %s", k1.Fingerprint, fp)
		}

		edPub, _, _ := ed25519.GenerateKey(rand.Reader)
		sshPub, _ := ssh.NewPublicKey(edPub)
		authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " me@laptop"
		k2, err := c1.RegisterSSHKeyPair(c1.NewRegisterSSHKeyPairParams("k2", authorized))
		if err != nil {
			t.Fatalf("registerSSHKeyPair: %v", err)
		}
		if k2.Name != "k2" || k2.Fingerprint != ssh.FingerprintLegacyMD5(sshPub) || k2.Account != "resu1" {
			t.Fatalf("registered key pair = %+v", k2)
		}

		_, err = c1.CreateSSHKeyPair(c1.NewCreateSSHKeyPairParams("k1"))
		tenWantCode(t, "createSSHKeyPair with a taken name", err, 431)
		_, err = c1.RegisterSSHKeyPair(c1.NewRegisterSSHKeyPairParams("k1", authorized))
		tenWantCode(t, "registerSSHKeyPair with a taken name", err, 431)
		_, err = c1.RegisterSSHKeyPair(c1.NewRegisterSSHKeyPairParams("k3", authorized))
		tenWantCode(t, "registerSSHKeyPair with a key already registered", err, 431)
		_, err = c1.RegisterSSHKeyPair(c1.NewRegisterSSHKeyPairParams("bad", "ssh-rsa not-a-key"))
		tenWantCode(t, "registerSSHKeyPair with a bad key", err, 431)
		_, err = c1.RegisterSSHKeyPair(c1.NewRegisterSSHKeyPairParams("bad", "hello"))
		tenWantCode(t, "registerSSHKeyPair with garbage", err, 431)

		list := func(c *cloudstack.CloudStackClient, set func(*cloudstack.ListSSHKeyPairsParams)) []string {
			t.Helper()
			p := c.SSH.NewListSSHKeyPairsParams()
			if set != nil {
				set(p)
			}
			r, err := c.SSH.ListSSHKeyPairs(p)
			if err != nil {
				t.Fatalf("listSSHKeyPairs: %v", err)
			}
			if r.Count < len(r.SSHKeyPairs) {
				t.Fatalf("count %d for %d key pairs", r.Count, len(r.SSHKeyPairs))
			}
			return arNames(r.SSHKeyPairs, func(k *cloudstack.SSHKeyPair) string { return k.Account + "/" + k.Name })
		}
		arWant(t, "u1's key pairs", list(u1.Client, nil), "resu1/k1", "resu1/k2")
		arWant(t, "by name", list(u1.Client, func(p *cloudstack.ListSSHKeyPairsParams) { p.SetName("k2") }), "resu1/k2")
		arWant(t, "by fingerprint", list(u1.Client, func(p *cloudstack.ListSSHKeyPairsParams) { p.SetFingerprint(k1.Fingerprint) }), "resu1/k1")
		arWant(t, "by keyword", list(u1.Client, func(p *cloudstack.ListSSHKeyPairsParams) { p.SetKeyword("K2") }), "resu1/k2")
		arWant(t, "page 2 of size 1", list(u1.Client, func(p *cloudstack.ListSSHKeyPairsParams) { p.SetPage(2); p.SetPagesize(1) }), "resu1/k2")

		// Another account sees and deletes none of them.
		arWant(t, "u2's key pairs", list(u2.Client, func(p *cloudstack.ListSSHKeyPairsParams) { p.SetListall(true) }))
		arWant(t, "u2 by u1's id", list(u2.Client, func(p *cloudstack.ListSSHKeyPairsParams) { p.SetId(k1.Id) }))
		_, err = u2.Client.SSH.DeleteSSHKeyPair(u2.Client.SSH.NewDeleteSSHKeyPairParams("k1"))
		tenWantCode(t, "u2 deletes k1 (none of its own)", err, 431)
		dp := u2.Client.SSH.NewDeleteSSHKeyPairParams("k1")
		dp.SetAccount("resu1")
		dp.SetDomainid(d1.Id)
		_, err = u2.Client.SSH.DeleteSSHKeyPair(dp)
		tenWantCode(t, "u2 deletes u1's k1", err, 531)

		// The domain admin sees them with listall and acts for u1.
		arWant(t, "domain admin listall", list(dadmin.Client, func(p *cloudstack.ListSSHKeyPairsParams) { p.SetListall(true) }), "resu1/k1", "resu1/k2")
		cp := dadmin.Client.SSH.NewCreateSSHKeyPairParams("byadmin")
		cp.SetAccount("resu1")
		cp.SetDomainid(d1.Id)
		if k, err := dadmin.Client.SSH.CreateSSHKeyPair(cp); err != nil || k.Account != "resu1" {
			t.Fatalf("domain admin creates for u1: %+v, %v", k, err)
		}

		if r, err := c1.DeleteSSHKeyPair(c1.NewDeleteSSHKeyPairParams("k1")); err != nil || !r.Success {
			t.Fatalf("deleteSSHKeyPair: %+v, %v", r, err)
		}
		arWant(t, "after delete", list(u1.Client, nil), "resu1/byadmin", "resu1/k2")
		_, err = c1.DeleteSSHKeyPair(c1.NewDeleteSSHKeyPairParams("k1"))
		tenWantCode(t, "delete again", err, 431)
	})

	t.Run("tags", func(t *testing.T) {
		tags := root.Resourcetags
		if _, err := tags.CreateTags(tags.NewCreateTagsParams([]string{zone.Id}, "Zone", map[string]string{"env": "prod"})); err != nil {
			t.Fatalf("createTags on a zone: %v", err)
		}
		_, err := u1.Client.Resourcetags.CreateTags(tags.NewCreateTagsParams([]string{zone.Id}, "Zone", map[string]string{"mine": "x"}))
		tenWantCode(t, "user tags a zone", err, 531)

		listTags := func(c *cloudstack.CloudStackClient, set func(*cloudstack.ListTagsParams)) []*cloudstack.Tag {
			t.Helper()
			p := c.Resourcetags.NewListTagsParams()
			if set != nil {
				set(p)
			}
			r, err := c.Resourcetags.ListTags(p)
			if err != nil {
				t.Fatalf("listTags: %v", err)
			}
			return r.Tags
		}
		zt := listTags(root, func(p *cloudstack.ListTagsParams) { p.SetListall(true); p.SetResourceid(zone.Id) })
		if len(zt) != 1 || zt[0].Key != "env" || zt[0].Value != "prod" || zt[0].Resourcetype != "Zone" || zt[0].Resourceid != zone.Id || zt[0].Account != "system" {
			t.Fatalf("zone tags = %+v", zt)
		}

		// A template and a VM of u1, as rows.
		ctx := context.Background()
		tmpl := &models.Template{
			UUID: models.NewUUID(), UniqueName: "restmpl", Name: "restmpl", Format: "QCOW2", Type: models.TemplateTypeUser,
			OSTypeID: arID(t, s, "os_types", models.OSTypeOther64UUID), State: models.TemplateActive,
			AccountID: arID(t, s, "accounts", u1.AccountID), DomainID: arID(t, s, "domains", d1.Id), Created: models.Now(),
		}
		if _, err := s.DB.NewInsert().Model(tmpl).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		vm := arVM(t, s, u1.AccountID, zone.Id, "tagvm", models.VMRunning, 1, 512)
		ut := u1.Client.Resourcetags
		if _, err := ut.CreateTags(ut.NewCreateTagsParams([]string{tmpl.UUID}, "template", map[string]string{"os": "linux"})); err != nil {
			t.Fatalf("createTags on a template (type case-insensitive): %v", err)
		}
		cp := ut.NewCreateTagsParams([]string{vm}, "UserVm", map[string]string{"role": "web", "tier": "front"})
		cp.SetCustomer("acme")
		if r, err := ut.CreateTags(cp); err != nil || !r.Success {
			t.Fatalf("createTags on a VM: %+v, %v", r, err)
		}
		_, err = ut.CreateTags(ut.NewCreateTagsParams([]string{vm}, "UserVm", map[string]string{"role": "db"}))
		tenWantCode(t, "createTags with a key the VM has", err, 431)
		_, err = ut.CreateTags(ut.NewCreateTagsParams([]string{vm}, "Spaceship", map[string]string{"a": "b"}))
		tenWantCode(t, "createTags on an unknown type", err, 431)
		_, err = ut.CreateTags(ut.NewCreateTagsParams([]string{models.NewUUID()}, "UserVm", map[string]string{"a": "b"}))
		tenWantCode(t, "createTags on an unknown id", err, 431)
		_, err = ut.CreateTags(ut.NewCreateTagsParams([]string{tmpl.UUID}, "ISO", map[string]string{"a": "b"}))
		tenWantCode(t, "createTags on a template as an ISO", err, 431)
		_, err = u2.Client.Resourcetags.CreateTags(ut.NewCreateTagsParams([]string{vm}, "UserVm", map[string]string{"a": "b"}))
		tenWantCode(t, "another account tags u1's VM", err, 531)

		key := func(tg *cloudstack.Tag) string { return tg.Resourcetype + ":" + tg.Key + "=" + tg.Value }
		arWant(t, "u1's tags", arNames(listTags(u1.Client, nil), key), "Template:os=linux", "UserVm:role=web", "UserVm:tier=front")
		arWant(t, "u2's tags", arNames(listTags(u2.Client, func(p *cloudstack.ListTagsParams) { p.SetListall(true) }), key))
		arWant(t, "by type", arNames(listTags(u1.Client, func(p *cloudstack.ListTagsParams) { p.SetResourcetype("uservm") }), key), "UserVm:role=web", "UserVm:tier=front")
		arWant(t, "by key", arNames(listTags(u1.Client, func(p *cloudstack.ListTagsParams) { p.SetKey("tier") }), key), "UserVm:tier=front")
		arWant(t, "by value", arNames(listTags(u1.Client, func(p *cloudstack.ListTagsParams) { p.SetValue("linux") }), key), "Template:os=linux")
		arWant(t, "by customer", arNames(listTags(u1.Client, func(p *cloudstack.ListTagsParams) { p.SetCustomer("acme") }), key), "UserVm:role=web", "UserVm:tier=front")
		arWant(t, "domain admin listall", arNames(listTags(dadmin.Client, func(p *cloudstack.ListTagsParams) { p.SetListall(true) }), key),
			"Template:os=linux", "UserVm:role=web", "UserVm:tier=front")
		vt := listTags(u1.Client, func(p *cloudstack.ListTagsParams) { p.SetResourceid(vm); p.SetKey("role") })
		if len(vt) != 1 || vt[0].Account != "resu1" || vt[0].Domainid != d1.Id || vt[0].Domain != "resd1" || vt[0].Customer != "acme" || vt[0].Resourceid != vm {
			t.Fatalf("VM tag = %+v", vt)
		}

		_, err = u2.Client.Resourcetags.DeleteTags(ut.NewDeleteTagsParams([]string{vm}, "UserVm"))
		tenWantCode(t, "another account deletes u1's tags", err, 531)
		dp := ut.NewDeleteTagsParams([]string{vm}, "UserVm")
		dp.SetTags(map[string]string{"role": "web"})
		if r, err := ut.DeleteTags(dp); err != nil || !r.Success {
			t.Fatalf("deleteTags role=web: %+v, %v", r, err)
		}
		dp.SetTags(map[string]string{"tier": "back"})
		_, err = ut.DeleteTags(dp)
		tenWantCode(t, "deleteTags with a value no tag has", err, 431)
		if _, err := ut.DeleteTags(ut.NewDeleteTagsParams([]string{vm}, "UserVm")); err != nil {
			t.Fatalf("deleteTags of every VM tag: %v", err)
		}
		arWant(t, "u1's tags after delete", arNames(listTags(u1.Client, nil), key), "Template:os=linux")
	})

	t.Run("affinity groups", func(t *testing.T) {
		ag := u1.Client.AffinityGroup
		types, err := ag.ListAffinityGroupTypes(ag.NewListAffinityGroupTypesParams())
		if err != nil {
			t.Fatalf("listAffinityGroupTypes: %v", err)
		}
		arWant(t, "types", arNames(types.AffinityGroupTypes, func(a *cloudstack.AffinityGroupType) string { return a.Type }), "host affinity", "host anti-affinity")

		cp := ag.NewCreateAffinityGroupParams("spread", "host anti-affinity")
		cp.SetDescription("keep apart")
		g, err := ag.CreateAffinityGroup(cp)
		if err != nil {
			t.Fatalf("createAffinityGroup: %v", err)
		}
		if g.Id == "" || g.Name != "spread" || g.Type != "host anti-affinity" || g.Description != "keep apart" || g.Account != "resu1" || g.Domainid != d1.Id {
			t.Fatalf("created group = %+v", g)
		}
		_, err = ag.CreateAffinityGroup(ag.NewCreateAffinityGroupParams("spread", "host affinity"))
		tenWantCode(t, "createAffinityGroup with a taken name", err, 431)
		_, err = ag.CreateAffinityGroup(ag.NewCreateAffinityGroupParams("x", "rack anti-affinity"))
		tenWantCode(t, "createAffinityGroup with a bad type", err, 431)
		together, err := ag.CreateAffinityGroup(ag.NewCreateAffinityGroupParams("together", "host affinity"))
		if err != nil {
			t.Fatalf("createAffinityGroup host affinity: %v", err)
		}

		listGroups := func(c *cloudstack.CloudStackClient, set func(*cloudstack.ListAffinityGroupsParams)) []*cloudstack.AffinityGroup {
			t.Helper()
			p := c.AffinityGroup.NewListAffinityGroupsParams()
			if set != nil {
				set(p)
			}
			r, err := c.AffinityGroup.ListAffinityGroups(p)
			if err != nil {
				t.Fatalf("listAffinityGroups: %v", err)
			}
			return r.AffinityGroups
		}
		name := func(g *cloudstack.AffinityGroup) string { return g.Name }
		arWant(t, "u1's groups", arNames(listGroups(u1.Client, nil), name), "spread", "together")
		arWant(t, "u2's groups", arNames(listGroups(u2.Client, func(p *cloudstack.ListAffinityGroupsParams) { p.SetListall(true) }), name))
		arWant(t, "by type", arNames(listGroups(u1.Client, func(p *cloudstack.ListAffinityGroupsParams) { p.SetType("host affinity") }), name), "together")

		stopped := arVM(t, s, u1.AccountID, zone.Id, "agstopped", models.VMStopped, 2, 1024)
		running := arVM(t, s, u1.AccountID, zone.Id, "agrunning", models.VMRunning, 1, 512)
		up := ag.NewUpdateVMAffinityGroupParams(stopped)
		up.SetAffinitygroupids([]string{g.Id})
		vm, err := ag.UpdateVMAffinityGroup(up)
		if err != nil {
			t.Fatalf("updateVMAffinityGroup: %v", err)
		}
		if vm.Id != stopped || len(vm.Affinitygroup) != 1 || vm.Affinitygroup[0].Id != g.Id {
			t.Fatalf("updateVMAffinityGroup answered %+v", vm)
		}
		gs := listGroups(u1.Client, func(p *cloudstack.ListAffinityGroupsParams) { p.SetVirtualmachineid(stopped) })
		if len(gs) != 1 || gs[0].Id != g.Id || len(gs[0].VirtualmachineIds) != 1 || gs[0].VirtualmachineIds[0] != stopped {
			t.Fatalf("groups of the VM = %+v", gs)
		}
		up = ag.NewUpdateVMAffinityGroupParams(running)
		up.SetAffinitygroupids([]string{g.Id})
		_, err = ag.UpdateVMAffinityGroup(up)
		tenWantCode(t, "updateVMAffinityGroup on a running VM", err, 431)
		up = u2.Client.AffinityGroup.NewUpdateVMAffinityGroupParams(stopped)
		up.SetAffinitygroupids([]string{})
		_, err = u2.Client.AffinityGroup.UpdateVMAffinityGroup(up)
		tenWantCode(t, "another account's updateVMAffinityGroup", err, 531)

		dp := ag.NewDeleteAffinityGroupParams()
		dp.SetId(g.Id)
		_, err = ag.DeleteAffinityGroup(dp)
		tenWantCode(t, "deleteAffinityGroup with a VM in it", err, 536)

		// By names: the VM moves to "together".
		up = ag.NewUpdateVMAffinityGroupParams(stopped)
		up.SetAffinitygroupnames([]string{"together"})
		if vm, err := ag.UpdateVMAffinityGroup(up); err != nil || len(vm.Affinitygroup) != 1 || vm.Affinitygroup[0].Id != together.Id {
			t.Fatalf("updateVMAffinityGroup by name: %+v, %v", vm, err)
		}
		if r, err := ag.DeleteAffinityGroup(dp); err != nil || !r.Success {
			t.Fatalf("deleteAffinityGroup once empty: %+v, %v", r, err)
		}
		// Clearing: no groups at all.
		up = ag.NewUpdateVMAffinityGroupParams(stopped)
		up.SetAffinitygroupids([]string{})
		if vm, err := ag.UpdateVMAffinityGroup(up); err != nil || len(vm.Affinitygroup) != 0 {
			t.Fatalf("updateVMAffinityGroup to none: %+v, %v", vm, err)
		}
		dp = ag.NewDeleteAffinityGroupParams()
		dp.SetName("together")
		if _, err := ag.DeleteAffinityGroup(dp); err != nil {
			t.Fatalf("deleteAffinityGroup by name: %v", err)
		}
		arWant(t, "u1's groups at the end", arNames(listGroups(u1.Client, nil), name))
	})

	t.Run("limits", func(t *testing.T) {
		lim := root.Limit
		limits := func(c *cloudstack.CloudStackClient, set func(*cloudstack.ListResourceLimitsParams)) map[string]int64 {
			t.Helper()
			p := c.Limit.NewListResourceLimitsParams()
			if set != nil {
				set(p)
			}
			r, err := c.Limit.ListResourceLimits(p)
			if err != nil {
				t.Fatalf("listResourceLimits: %v", err)
			}
			out := map[string]int64{}
			for _, l := range r.ResourceLimits {
				out[l.Resourcetype+"/"+l.Resourcetypename] = l.Max
			}
			return out
		}
		ofU1 := func(p *cloudstack.ListResourceLimitsParams) { p.SetAccount("resu1"); p.SetDomainid(d1.Id) }
		got := limits(root, ofU1)
		want := map[string]int64{"0/user_vm": 20, "1/public_ip": 20, "2/volume": 20, "3/snapshot": 20, "4/template": 20, "5/project": 10,
			"6/network": 20, "7/vpc": 20, "8/cpu": 40, "9/memory": 40960, "10/primary_storage": 200, "11/secondary_storage": 400}
		if len(got) != len(want) {
			t.Fatalf("u1's limits = %v", got)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("u1's limit %s = %d, want %d (all: %v)", k, got[k], v, got)
			}
		}

		up := lim.NewUpdateResourceLimitParams(0)
		up.SetAccount("resu1")
		up.SetDomainid(d1.Id)
		up.SetMax(5)
		if _, err := lim.UpdateResourceLimit(up); err != nil {
			t.Fatalf("updateResourceLimit: %v", err)
		}
		if got := limits(u1.Client, nil)["0/user_vm"]; got != 5 {
			t.Fatalf("u1 sees its user_vm limit %d, want 5", got)
		}
		if got := limits(root, func(p *cloudstack.ListResourceLimitsParams) { ofU1(p); p.SetResourcetype(0) }); len(got) != 1 || got["0/user_vm"] != 5 {
			t.Fatalf("filtered by type: %v", got)
		}
		if got := limits(root, nil); got["0/user_vm"] != -1 || got["8/cpu"] != -1 {
			t.Fatalf("the root admin's own limits = %v, want unlimited", got)
		}

		// Domain limits: root sets d1's; its domain admin may not touch them.
		dl := lim.NewUpdateResourceLimitParams(0)
		dl.SetDomainid(d1.Id)
		dl.SetMax(10)
		if _, err := lim.UpdateResourceLimit(dl); err != nil {
			t.Fatalf("updateResourceLimit on a domain: %v", err)
		}
		if got := limits(root, func(p *cloudstack.ListResourceLimitsParams) { p.SetDomainid(d1.Id) }); got["0/user_vm"] != 10 || got["8/cpu"] != -1 {
			t.Fatalf("d1's limits = %v", got)
		}
		raise := dadmin.Client.Limit.NewUpdateResourceLimitParams(0)
		raise.SetDomainid(d1.Id)
		raise.SetMax(100)
		_, err := dadmin.Client.Limit.UpdateResourceLimit(raise)
		tenWantCode(t, "domain admin raises its own domain's limit", err, 531)
		own := dadmin.Client.Limit.NewUpdateResourceLimitParams(0)
		own.SetAccount("resdadmin")
		own.SetDomainid(d1.Id)
		own.SetMax(100)
		_, err = dadmin.Client.Limit.UpdateResourceLimit(own)
		tenWantCode(t, "domain admin raises its own account's limit", err, 531)
		forU1 := dadmin.Client.Limit.NewUpdateResourceLimitParams(8)
		forU1.SetAccount("resu1")
		forU1.SetDomainid(d1.Id)
		forU1.SetMax(8)
		if _, err := dadmin.Client.Limit.UpdateResourceLimit(forU1); err != nil {
			t.Fatalf("domain admin limits u1's CPUs: %v", err)
		}
		sub := tenCreateDomain(t, root, "ressub", d1.Id)
		if got := limits(root, func(p *cloudstack.ListResourceLimitsParams) { p.SetDomainid(sub.Id) }); got["0/user_vm"] != 10 {
			t.Fatalf("a subdomain inherits d1's limit: %v", got)
		}
		over := dadmin.Client.Limit.NewUpdateResourceLimitParams(0)
		over.SetDomainid(sub.Id)
		over.SetMax(20)
		_, err = dadmin.Client.Limit.UpdateResourceLimit(over)
		tenWantCode(t, "subdomain limit above its parent's", err, 431)
		over.SetMax(8)
		if _, err := dadmin.Client.Limit.UpdateResourceLimit(over); err != nil {
			t.Fatalf("domain admin limits its subdomain: %v", err)
		}
		_, err = u1.Client.Limit.UpdateResourceLimit(forU1)
		tenWantCode(t, "user updateResourceLimit", err, 405)
		rootAcct := lim.NewUpdateResourceLimitParams(0)
		rootAcct.SetAccount("admin")
		rootAcct.SetDomainid(models.RootDomainUUID)
		rootAcct.SetMax(3)
		_, err = lim.UpdateResourceLimit(rootAcct)
		tenWantCode(t, "a limit on a root admin account", err, 431)
		rootDom := lim.NewUpdateResourceLimitParams(0)
		rootDom.SetDomainid(models.RootDomainUUID)
		rootDom.SetMax(3)
		_, err = lim.UpdateResourceLimit(rootDom)
		tenWantCode(t, "a limit on ROOT", err, 531)
		for _, bad := range []func(p *cloudstack.UpdateResourceLimitParams){
			func(p *cloudstack.UpdateResourceLimitParams) { p.SetResourcetype(12) },
			func(p *cloudstack.UpdateResourceLimitParams) { p.SetMax(-2) },
		} {
			p := lim.NewUpdateResourceLimitParams(0)
			p.SetDomainid(d1.Id)
			p.SetMax(1)
			bad(p)
			_, err = lim.UpdateResourceLimit(p)
			tenWantCode(t, "updateResourceLimit with a bad value", err, 431)
		}
		// The wire: the limit nested under "resourcelimit", as CloudStack.
		code, body := tenRaw(t, s, s.Admin.APIKey, s.Admin.SecretKey, url.Values{"command": {"updateResourceLimit"},
			"resourcetype": {"10"}, "max": {"50"}, "account": {"resu1"}, "domainid": {d1.Id}})
		var upd struct {
			ResourceLimit struct {
				Account, Domainid, Resourcetype, Resourcetypename string
				Max                                               int64
			} `json:"resourcelimit"`
		}
		if err := json.Unmarshal(body, &upd); err != nil || code != 200 || upd.ResourceLimit.Max != 50 ||
			upd.ResourceLimit.Resourcetype != "10" || upd.ResourceLimit.Resourcetypename != "primary_storage" || upd.ResourceLimit.Account != "resu1" {
			t.Fatalf("updateResourceLimit answered %d %s", code, body)
		}

		// Counts from the inventory: u1 owns the VMs of the earlier steps
		// (tagvm 1/512, agstopped 2/1024, agrunning 1/512) and a volume.
		arVM(t, s, u1.AccountID, zone.Id, "gone", models.VMDestroyed, 4, 4096)
		vol := &models.Volume{UUID: models.NewUUID(), Name: "data", VolumeType: "DATADISK", State: models.VolumeReady, Size: 3 * models.GiB,
			ZoneID: arID(t, s, "zones", zone.Id), AccountID: arID(t, s, "accounts", u1.AccountID), DomainID: arID(t, s, "domains", d1.Id), Created: models.Now()}
		if _, err := s.DB.NewInsert().Model(vol).Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
		recount := func(params url.Values) map[string]int64 {
			t.Helper()
			params.Set("command", "updateResourceCount")
			code, body := tenRaw(t, s, s.Admin.APIKey, s.Admin.SecretKey, params)
			var r struct {
				Count         int `json:"count"`
				ResourceCount []struct {
					Account, Domainid, Resourcetype, Resourcetypename string
					Resourcecount                                     int64
				} `json:"resourcecount"`
			}
			if err := json.Unmarshal(body, &r); err != nil || code != 200 || r.Count != len(r.ResourceCount) || r.Count == 0 {
				t.Fatalf("updateResourceCount answered %d %s", code, body)
			}
			out := map[string]int64{}
			for _, c := range r.ResourceCount {
				if c.Domainid != d1.Id || c.Account != params.Get("account") {
					t.Fatalf("count of the wrong owner: %s", body)
				}
				out[c.Resourcetype+"/"+c.Resourcetypename] = c.Resourcecount
			}
			return out
		}
		wantCounts := map[string]int64{"0/user_vm": 3, "8/cpu": 4, "9/memory": 2048, "2/volume": 1, "10/primary_storage": 3 * models.GiB, "4/template": 1, "3/snapshot": 0}
		got = recount(url.Values{"domainid": {d1.Id}, "account": {"resu1"}})
		for k, v := range wantCounts {
			if got[k] != v {
				t.Fatalf("u1's count %s = %d, want %d (all: %v)", k, got[k], v, got)
			}
		}
		got = recount(url.Values{"domainid": {d1.Id}})
		for k, v := range wantCounts {
			if got[k] != v {
				t.Fatalf("d1's count %s = %d, want %d (all: %v)", k, got[k], v, got)
			}
		}
		if got := recount(url.Values{"domainid": {d1.Id}, "account": {"resu1"}, "resourcetype": {"0"}}); len(got) != 1 || got["0/user_vm"] != 3 {
			t.Fatalf("one type: %v", got)
		}

		// listAccounts and listDomains show the limits and totals.
		ap := root.Account.NewListAccountsParams()
		ap.SetId(u1.AccountID)
		accts, err := root.Account.ListAccounts(ap)
		if err != nil || len(accts.Accounts) != 1 {
			t.Fatalf("listAccounts: %v", err)
		}
		a := accts.Accounts[0]
		if a.Vmtotal != 3 || a.Vmlimit != "5" || a.Vmavailable != "2" || a.Cputotal != 4 || a.Cpulimit != "8" || a.Memorytotal != 2048 ||
			a.Memorylimit != "40960" || a.Primarystoragetotal != 3 || a.Primarystoragelimit != "50" || a.Volumetotal != 1 || a.Templatetotal != 1 {
			t.Fatalf("listAccounts limits and totals = %+v", a)
		}
		dp := root.Domain.NewListDomainsParams()
		dp.SetId(d1.Id)
		doms, err := root.Domain.ListDomains(dp)
		if err != nil || len(doms.Domains) != 1 {
			t.Fatalf("listDomains: %v", err)
		}
		if d := doms.Domains[0]; d.Vmtotal != 3 || d.Vmlimit != "10" || d.Vmavailable != "7" || d.Cpulimit != "Unlimited" {
			t.Fatalf("listDomains limits and totals = %+v", d)
		}
		_, err = dadmin.Client.Limit.UpdateResourceCount(dadmin.Client.Limit.NewUpdateResourceCountParams(d2ID(t, root)))
		tenWantCode(t, "domain admin recounts another domain", err, 531)
	})

	t.Run("configurations", func(t *testing.T) {
		cfg := root.Configuration
		find := func(name string) *cloudstack.Configuration {
			t.Helper()
			p := cfg.NewListConfigurationsParams()
			p.SetName(name)
			r, err := cfg.ListConfigurations(p)
			if err != nil {
				t.Fatalf("listConfigurations: %v", err)
			}
			for _, c := range r.Configurations {
				if c.Name == name {
					return c
				}
			}
			t.Fatalf("setting %s not listed", name)
			return nil
		}
		c := find("max.account.user.vms")
		if c.Value != "20" || c.Defaultvalue != "20" || c.Category != "Account Defaults" || c.Type != "Number" || !c.Isdynamic {
			t.Fatalf("max.account.user.vms = %+v", c)
		}
		kp := cfg.NewListConfigurationsParams()
		kp.SetKeyword("overprovisioning")
		if r, err := cfg.ListConfigurations(kp); err != nil || r.Count < 3 {
			t.Fatalf("keyword overprovisioning: %+v, %v", r, err)
		}
		up := cfg.NewUpdateConfigurationParams("max.account.user.vms")
		up.SetValue("30")
		r, err := cfg.UpdateConfiguration(up)
		if err != nil || r.Name != "max.account.user.vms" || r.Value != "30" {
			t.Fatalf("updateConfiguration: %+v, %v", r, err)
		}
		if c := find("max.account.user.vms"); c.Value != "30" {
			t.Fatalf("after update: %+v", c)
		}
		// u2 has no limit of its own: the setting is its limit at once.
		if got := func() int64 {
			p := u2.Client.Limit.NewListResourceLimitsParams()
			p.SetResourcetype(0)
			r, err := u2.Client.Limit.ListResourceLimits(p)
			if err != nil || len(r.ResourceLimits) != 1 {
				t.Fatalf("listResourceLimits: %v", err)
			}
			return r.ResourceLimits[0].Max
		}(); got != 30 {
			t.Fatalf("u2's user_vm limit after the setting changed = %d, want 30", got)
		}
		for _, bad := range [][2]string{{"max.account.user.vms", "abc"}, {"max.account.user.vms", "-2"}, {"expunge.delay", "1.5"},
			{"cpu.overprovisioning.factor", "zero"}, {"no.such.setting", "1"}} {
			p := cfg.NewUpdateConfigurationParams(bad[0])
			p.SetValue(bad[1])
			_, err := cfg.UpdateConfiguration(p)
			tenWantCode(t, "updateConfiguration "+bad[0]+"="+bad[1], err, 431)
		}
		zp := cfg.NewUpdateConfigurationParams("cpu.overprovisioning.factor")
		zp.SetValue("2")
		zp.SetZoneid(zone.Id)
		_, err = cfg.UpdateConfiguration(zp)
		tenWantCode(t, "updateConfiguration per zone", err, 431)
		if _, err := cfg.ResetConfiguration(cfg.NewResetConfigurationParams("max.account.user.vms")); err != nil {
			t.Fatalf("resetConfiguration: %v", err)
		}
		if c := find("max.account.user.vms"); c.Value != "20" {
			t.Fatalf("after reset: %+v", c)
		}
		_, err = u1.Client.Configuration.ListConfigurations(u1.Client.Configuration.NewListConfigurationsParams())
		tenWantCode(t, "user listConfigurations", err, 405)
	})

	t.Run("wire", func(t *testing.T) {
		// JSON keys and types as CloudStack sends them.
		raw := func(key, secret string, params ...string) map[string]any {
			t.Helper()
			v := url.Values{}
			for i := 0; i+1 < len(params); i += 2 {
				v.Set(params[i], params[i+1])
			}
			code, body := tenRaw(t, s, key, secret, v)
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil || code != 200 {
				t.Fatalf("%s: %d %s", params[1], code, body)
			}
			return m
		}
		first := func(m map[string]any, key string) map[string]any {
			t.Helper()
			l, ok := m[key].([]any)
			if !ok || len(l) == 0 {
				t.Fatalf("no %s list in %v", key, m)
			}
			return l[0].(map[string]any)
		}
		rl := first(raw(u1.Key, u1.Secret, "command", "listResourceLimits", "resourcetype", "0"), "resourcelimit")
		if _, ok := rl["max"].(float64); !ok || rl["resourcetype"] != "0" || rl["resourcetypename"] != "user_vm" || rl["account"] != "resu1" {
			t.Fatalf("resourcelimit = %v", rl)
		}
		types := raw(u1.Key, u1.Secret, "command", "listAffinityGroupTypes")
		if types["count"] != float64(2) || types["affinityGroupType"] == nil {
			t.Fatalf("listAffinityGroupTypes = %v", types)
		}
		kp := raw(u1.Key, u1.Secret, "command", "createSSHKeyPair", "name", "wirekey")["keypair"].(map[string]any)
		if kp["hasannotations"] != false || !strings.HasPrefix(kp["privatekey"].(string), "-----BEGIN RSA PRIVATE KEY-----") {
			t.Fatalf("keypair = %v", kp)
		}
		cf := first(raw(s.Admin.APIKey, s.Admin.SecretKey, "command", "listConfigurations", "name", "expunge.delay"), "configuration")
		if cf["isdynamic"] != true || cf["value"] != "86400" || cf["scope"] != "global" {
			t.Fatalf("configuration = %v", cf)
		}
		empty := raw(u2.Key, u2.Secret, "command", "listTags")
		if len(empty) != 0 {
			t.Fatalf("an empty listTags = %v, want {}", empty)
		}
	})

	t.Run("events", func(t *testing.T) {
		for _, typ := range []string{"CREATE_SSH_KEY_PAIR", "REGISTER_SSH_KEY_PAIR", "DELETE_SSH_KEY_PAIR", "CREATE_TAGS", "DELETE_TAGS",
			"AG.CREATE", "AG.DELETE", "VM.AG.UPDATE", "RESOURCE.LIMIT.UPDATE", "RESOURCE.COUNT.UPDATE", "CONFIGURATION.VALUE.EDIT"} {
			p := root.Event.NewListEventsParams()
			p.SetListall(true)
			p.SetType(typ)
			r, err := root.Event.ListEvents(p)
			if err != nil || r.Count == 0 {
				t.Errorf("no %s event: %v", typ, err)
			}
		}
	})
}

// d2ID creates a domain outside the domain admin's reach.
func d2ID(t *testing.T, cs *cloudstack.CloudStackClient) string {
	t.Helper()
	return tenCreateDomain(t, cs, "resd2", "").Id
}
