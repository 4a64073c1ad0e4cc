package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/models"
)

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		ok            bool
	}{
		{"listzones", "listzones", true},
		{"listzones", "listzone", false},
		{"list*", "listzones", true},
		{"list*", "list", true},
		{"list*", "createzone", false},
		{"*", "anything", true},
		{"*zone*", "createzone", true},
		{"*zone*", "listzonesmetrics", true},
		{"*zones", "listzones", true},
		{"*zones", "listzonesmetrics", false},
		{"l*t*s", "listapis", true},
		{"l*t*s", "listapi", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
	} {
		if got := globMatch(tc.pattern, tc.name); got != tc.ok {
			t.Errorf("globMatch(%q, %q) = %v", tc.pattern, tc.name, got)
		}
	}
}

// TestRoleCommands walks the role commands through the HTTP API and checks
// that rules decide, first match wins, and fall back to declared access.
func TestRoleCommands(t *testing.T) {
	ts := newTestServer(t, nil)
	decode := func(r reply, into any) {
		t.Helper()
		if r.Status != 200 {
			t.Fatalf("%s", r)
		}
		for _, v := range r.Body {
			if err := json.Unmarshal(v, into); err != nil {
				t.Fatal(err)
			}
		}
	}
	var roles cloudstack.ListRolesResponse
	decode(ts.admin(cmdParams("listRoles")), &roles)
	if roles.Count != 4 {
		t.Fatalf("%d default roles", roles.Count)
	}
	for _, r := range roles.Roles {
		if !r.Isdefault || r.Id == "" || r.Type == "" {
			t.Fatalf("role %+v", r)
		}
	}
	var created struct {
		Role cloudstack.CreateRoleResponse `json:"role"`
	}
	decode(ts.admin(cmdParams("createRole", "name", "Ops", "roleid", models.RoleUserUUID, "description", "ops people")), &created)
	if created.Role.Type != "User" || created.Role.Isdefault || created.Role.Name != "Ops" {
		t.Fatalf("created %+v", created.Role)
	}
	roleID := created.Role.Id
	wantError(t, ts.admin(cmdParams("createRole", "name", "Ops", "type", "User")), 431, "already exists")
	wantError(t, ts.admin(cmdParams("createRole", "name", "X", "type", "Boss")), 431, "Invalid role type")
	wantError(t, ts.admin(cmdParams("createRole", "name", "X")), 431, "type or roleid")
	wantError(t, ts.admin(cmdParams("updateRole", "id", models.RoleUserUUID, "name", "Y")), 431, "Default roles")
	wantError(t, ts.admin(cmdParams("deleteRole", "id", models.RoleUserUUID)), 431, "Default roles")
	wantError(t, ts.admin(cmdParams("createRolePermission", "roleid", models.RoleRootAdminUUID, "rule", "*", "permission", "deny")), 431, "root admin")

	// An account with the new role.
	u := ts.addUser(roleID)
	if r := ts.signed(u.APIKey, u.Secret, cmdParams("nimbusTestWrite")); r.Status != 200 {
		t.Fatalf("fallback to declared access: %s", r)
	}
	wantError(t, ts.admin(cmdParams("deleteRole", "id", roleID)), 536, "in use")

	var perm struct {
		P cloudstack.CreateRolePermissionResponse `json:"rolepermission"`
	}
	decode(ts.admin(cmdParams("createRolePermission", "roleid", roleID, "rule", "nimbusTest*", "permission", "deny", "description", "no tests")), &perm)
	if perm.P.Rule != "nimbusTest*" || perm.P.Permission != "deny" || perm.P.Roleid != roleID || perm.P.Rolename != "Ops" {
		t.Fatalf("permission %+v", perm.P)
	}
	wantError(t, ts.signed(u.APIKey, u.Secret, cmdParams("nimbusTestWrite")), 405, "nimbusTestWrite")
	// The deny rule hides the commands from listApis too.
	var apis cloudstack.ListApisResponse
	decode(ts.signed(u.APIKey, u.Secret, cmdParams("listApis")), &apis)
	for _, a := range apis.Apis {
		if strings.HasPrefix(a.Name, "nimbusTest") {
			t.Fatalf("listApis shows denied %s", a.Name)
		}
	}
	// A rule can grant what the role type lacks; order decides.
	var allow struct {
		P cloudstack.CreateRolePermissionResponse `json:"rolepermission"`
	}
	decode(ts.admin(cmdParams("createRolePermission", "roleid", roleID, "rule", "nimbusTestWrite", "permission", "allow")), &allow)
	wantError(t, ts.signed(u.APIKey, u.Secret, cmdParams("nimbusTestWrite")), 405, "") // the deny comes first
	decode(ts.admin(cmdParams("updateRolePermission", "roleid", roleID, "ruleorder", allow.P.Id+","+perm.P.Id)), &map[string]any{})
	if r := ts.signed(u.APIKey, u.Secret, cmdParams("nimbusTestWrite")); r.Status != 200 {
		t.Fatalf("after reorder: %s", r)
	}
	wantError(t, ts.signed(u.APIKey, u.Secret, cmdParams("nimbusTestEcho")), 405, "")
	wantError(t, ts.admin(cmdParams("updateRolePermission", "roleid", roleID, "ruleorder", allow.P.Id)), 431, "each of the role's 2 rules")

	var list cloudstack.ListRolePermissionsResponse
	decode(ts.admin(cmdParams("listRolePermissions", "roleid", roleID)), &list)
	if list.Count != 2 || list.RolePermissions[0].Id != allow.P.Id || list.RolePermissions[1].Rule != "nimbusTest*" {
		t.Fatalf("permissions %+v", list.RolePermissions)
	}
	// Flip the deny to allow.
	decode(ts.admin(cmdParams("updateRolePermission", "roleid", roleID, "ruleid", perm.P.Id, "permission", "allow")), &map[string]any{})
	if r := ts.signed(u.APIKey, u.Secret, cmdParams("nimbusTestEcho")); r.Status != 200 {
		t.Fatalf("after flip: %s", r)
	}
	var del cloudstack.DeleteRolePermissionResponse
	decode(ts.admin(cmdParams("deleteRolePermission", "id", perm.P.Id)), &del)
	if !del.Success {
		t.Fatal("deleteRolePermission did not succeed")
	}

	// Users see only their own role; an unused custom role can be deleted.
	var mine cloudstack.ListRolesResponse
	decode(ts.signed(u.APIKey, u.Secret, cmdParams("listRoles")), &mine)
	if mine.Count != 1 || mine.Roles[0].Id != roleID {
		t.Fatalf("user sees roles %+v", mine.Roles)
	}
	var upd cloudstack.UpdateRoleResponse
	r := ts.admin(cmdParams("updateRole", "id", roleID, "description", "changed"))
	var nested struct {
		Role cloudstack.UpdateRoleResponse `json:"role"`
	}
	decode(r, &nested)
	upd = nested.Role
	if upd.Description != "changed" {
		t.Fatalf("updateRole %s", r.Raw)
	}
	// cloudstack-go's UpdateRole reads the fields at the top level.
	var flat cloudstack.UpdateRoleResponse
	decode(r, &flat)
	if flat.Id != roleID || flat.Description != "changed" || flat.Type != "User" {
		t.Fatalf("updateRole flat %s", r.Raw)
	}
	decode(ts.admin(cmdParams("createRole", "name", "Temp", "type", "DomainAdmin")), &created)
	var ok cloudstack.DeleteRoleResponse
	decode(ts.admin(cmdParams("deleteRole", "id", created.Role.Id)), &ok)
	if !ok.Success {
		t.Fatal("deleteRole did not succeed")
	}
	roles = cloudstack.ListRolesResponse{}
	decode(ts.admin(cmdParams("listRoles", "keyword", "%")), &roles)
	if roles.Count != 0 {
		t.Fatalf("keyword %% matched %d roles", roles.Count)
	}
	decode(ts.admin(cmdParams("listRoles", "keyword", "admin")), &roles)
	if roles.Count != 2 {
		t.Fatalf("keyword admin matched %d roles", roles.Count)
	}
}
