package bmctest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// RedfishOptions shapes a Redfish BMC.
type RedfishOptions struct {
	User, Password string // default admin / password
	MAC            string // the machine's NIC; default 52:54:00:00:00:01
	Sockets        int    // default 2
	CoresPerSocket int    // default 8
	MHz            int    // default 2400
	MemoryMiB      int    // default 65536 (in two DIMMs)
	// OnPower, when set, is called (outside the lock) after the machine's
	// power changed, with "On" or "Off".
	OnPower func(state string)
}

// Redfish is a small stateful Redfish service: the endpoints bmclib's
// gofish provider uses for sessions, power, the boot override and
// inventory (system, processors, memory, network adapters, manager).
type Redfish struct {
	srv  *httptest.Server
	URL  string // redfish://127.0.0.1:PORT (HTTPS, self-signed)
	Addr string // 127.0.0.1:PORT
	o    RedfishOptions

	mu         sync.Mutex
	power      string // On, Off
	bootTarget string // None, Pxe, Hdd...
	bootOnce   string // Disabled, Once, Continuous
	bootMode   string // Legacy, UEFI
	stuck      bool
	down       bool
	resets     []string
	sessions   map[string]bool
	nextSess   int
}

// StartRedfish starts the service on a loopback HTTPS port, powered off.
func StartRedfish(t testing.TB, o RedfishOptions) *Redfish {
	t.Helper()
	if o.User == "" {
		o.User, o.Password = "admin", "password"
	}
	if o.MAC == "" {
		o.MAC = "52:54:00:00:00:01"
	}
	if o.Sockets == 0 {
		o.Sockets = 2
	}
	if o.CoresPerSocket == 0 {
		o.CoresPerSocket = 8
	}
	if o.MHz == 0 {
		o.MHz = 2400
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 65536
	}
	r := &Redfish{o: o, power: "Off", bootTarget: "None", bootOnce: "Disabled", bootMode: "Legacy", sessions: map[string]bool{}}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	r.Addr = strings.TrimPrefix(r.srv.URL, "https://")
	r.URL = "redfish://" + r.Addr
	t.Cleanup(r.srv.Close)
	return r
}

// Power is "On" or "Off".
func (r *Redfish) Power() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.power
}

// SetPower changes the power behind the BMC's back.
func (r *Redfish) SetPower(state string) {
	r.mu.Lock()
	r.power = state
	r.mu.Unlock()
}

// Boot is the boot override: target (Pxe, Hdd, None) and Once/Continuous.
func (r *Redfish) Boot() (target, enabled string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bootTarget, r.bootOnce
}

// Resets are the ResetTypes the BMC was asked for, oldest first.
func (r *Redfish) Resets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.resets...)
}

// SetStuck makes resets succeed without changing the power.
func (r *Redfish) SetStuck(stuck bool) {
	r.mu.Lock()
	r.stuck = stuck
	r.mu.Unlock()
}

// SetDown makes the service drop every connection (a BMC that stopped
// answering) or answer again.
func (r *Redfish) SetDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

func (r *Redfish) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	down := r.down
	r.mu.Unlock()
	if down {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	path := strings.TrimSuffix(req.URL.Path, "/")
	if path == "/redfish/v1" || path == "/redfish" {
		r.json(w, http.StatusOK, r.root())
		return
	}
	if path == "/redfish/v1/SessionService/Sessions" && req.Method == http.MethodPost {
		var body struct{ UserName, Password string }
		_ = json.NewDecoder(req.Body).Decode(&body)
		r.mu.Lock()
		user, pass := r.o.User, r.o.Password
		r.mu.Unlock()
		if body.UserName != user || body.Password != pass {
			r.fail(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "invalid username or password")
			return
		}
		r.mu.Lock()
		r.nextSess++
		id := fmt.Sprintf("%d", r.nextSess)
		token := "token-" + id + "-" + randomHex(8)
		r.sessions[token] = true
		r.mu.Unlock()
		loc := "/redfish/v1/SessionService/Sessions/" + id
		w.Header().Set("X-Auth-Token", token)
		w.Header().Set("Location", loc)
		r.json(w, http.StatusCreated, map[string]any{"@odata.id": loc, "Id": id, "UserName": body.UserName})
		return
	}
	if !r.authorized(req) {
		r.fail(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "no valid session")
		return
	}
	if strings.HasPrefix(path, "/redfish/v1/SessionService/Sessions/") && req.Method == http.MethodDelete {
		r.mu.Lock()
		delete(r.sessions, req.Header.Get("X-Auth-Token"))
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	switch {
	case path == "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset" && req.Method == http.MethodPost:
		r.reset(w, req)
		return
	case path == "/redfish/v1/Systems/1" && req.Method == http.MethodPatch:
		r.patchBoot(w, req)
		return
	case path == accountPath && req.Method == http.MethodPatch:
		var body struct{ Password string }
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Password == "" {
			r.fail(w, http.StatusBadRequest, "Base.1.8.PropertyValueFormatError", "Password")
			return
		}
		r.mu.Lock()
		r.o.Password = body.Password
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	case req.Method != http.MethodGet && req.Method != http.MethodHead:
		r.fail(w, http.StatusMethodNotAllowed, "Base.1.8.ActionNotSupported", req.Method+" "+path)
		return
	}
	doc, ok := r.resource(path)
	if !ok {
		r.fail(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", path)
		return
	}
	r.json(w, http.StatusOK, doc)
}

func (r *Redfish) authorized(req *http.Request) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u, p, ok := req.BasicAuth(); ok {
		return u == r.o.User && p == r.o.Password
	}
	return r.sessions[req.Header.Get("X-Auth-Token")]
}

// accountPath is the one BMC account (the admin user) AccountService lists.
const accountPath = "/redfish/v1/AccountService/Accounts/2"

// Password is the admin user's password now (changed through AccountService).
func (r *Redfish) Password() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.o.Password
}

// SetPassword changes the admin user's password behind the client's back
// (at the BMC's own console) and ends every session, as BMCs do when an
// account's password changes.
func (r *Redfish) SetPassword(password string) {
	r.mu.Lock()
	r.o.Password = password
	clear(r.sessions)
	r.mu.Unlock()
}

// Logins counts the sessions ever opened.
func (r *Redfish) Logins() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nextSess
}

// DropSessions ends every session, as a BMC that restarted or expired them.
func (r *Redfish) DropSessions() {
	r.mu.Lock()
	clear(r.sessions)
	r.mu.Unlock()
}

func (r *Redfish) reset(w http.ResponseWriter, req *http.Request) {
	var body struct{ ResetType string }
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		r.fail(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", err.Error())
		return
	}
	r.mu.Lock()
	r.resets = append(r.resets, body.ResetType)
	before := r.power
	if !r.stuck {
		switch body.ResetType {
		case "On", "ForceOn":
			r.power = "On"
		case "ForceOff", "GracefulShutdown", "PushPowerButton":
			r.power = "Off"
		case "ForceRestart", "GracefulRestart", "PowerCycle":
			r.power = "On"
		default:
			r.mu.Unlock()
			r.fail(w, http.StatusBadRequest, "Base.1.8.ActionParameterNotSupported", body.ResetType)
			return
		}
	}
	after := r.power
	if r.power == "On" && r.bootOnce == "Once" && before == "Off" {
		r.bootOnce, r.bootTarget = "Disabled", "None" // a one-time override is used by the boot
	}
	r.mu.Unlock()
	if r.o.OnPower != nil && after != before {
		r.o.OnPower(after)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *Redfish) patchBoot(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Boot struct {
			BootSourceOverrideTarget  string
			BootSourceOverrideEnabled string
			BootSourceOverrideMode    string
		}
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		r.fail(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", err.Error())
		return
	}
	r.mu.Lock()
	if v := body.Boot.BootSourceOverrideTarget; v != "" {
		r.bootTarget = v
	}
	if v := body.Boot.BootSourceOverrideEnabled; v != "" {
		r.bootOnce = v
	}
	if v := body.Boot.BootSourceOverrideMode; v != "" {
		r.bootMode = v
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *Redfish) json(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (r *Redfish) fail(w http.ResponseWriter, code int, id, msg string) {
	r.json(w, code, map[string]any{"error": map[string]any{"code": id, "message": msg,
		"@Message.ExtendedInfo": []any{map[string]any{"MessageId": id, "Message": msg}}}})
}

func link(p string) map[string]any { return map[string]any{"@odata.id": p} }

func collection(p string, members ...string) map[string]any {
	ms := make([]any, len(members))
	for i, m := range members {
		ms[i] = link(m)
	}
	return map[string]any{"@odata.id": p, "Name": p, "Members": ms, "Members@odata.count": len(ms)}
}

func (r *Redfish) root() map[string]any {
	return map[string]any{
		"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot", "Id": "RootService",
		"Name": "Nimbus test Redfish service", "RedfishVersion": "1.11.0", "UUID": "00000000-0000-0000-0000-000000000001",
		"Systems": link("/redfish/v1/Systems"), "Chassis": link("/redfish/v1/Chassis"), "Managers": link("/redfish/v1/Managers"),
		"SessionService": link("/redfish/v1/SessionService"), "AccountService": link("/redfish/v1/AccountService"),
		"Links": map[string]any{"Sessions": link("/redfish/v1/SessionService/Sessions")},
	}
}

// resource answers a GET of a path.
func (r *Redfish) resource(path string) (map[string]any, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	const sys = "/redfish/v1/Systems/1"
	switch path {
	case "/redfish/v1/SessionService":
		return map[string]any{"@odata.id": path, "Id": "SessionService", "ServiceEnabled": true, "Sessions": link(path + "/Sessions")}, true
	case "/redfish/v1/Systems":
		return collection(path, sys), true
	case "/redfish/v1/AccountService":
		return map[string]any{"@odata.id": path, "Id": "AccountService", "ServiceEnabled": true, "Accounts": link(path + "/Accounts")}, true
	case "/redfish/v1/AccountService/Accounts":
		return collection(path, accountPath), true
	case accountPath:
		return map[string]any{"@odata.id": path, "@odata.type": "#ManagerAccount.v1_4_0.ManagerAccount", "Id": "2", "Name": "User Account",
			"UserName": r.o.User, "RoleId": "Administrator", "Enabled": true, "Locked": false, "Password": nil}, true
	case sys:
		cores := r.o.Sockets * r.o.CoresPerSocket
		return map[string]any{
			"@odata.id": sys, "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem", "Id": "1", "Name": "System",
			"Manufacturer": "Nimbus", "Model": "Test Server 9000", "SerialNumber": "NB-0001", "BIOSVersion": "2.4.1",
			"UUID": "00000000-0000-0000-0000-0000000000aa", "SystemType": "Physical",
			"PowerState": r.power, "Status": map[string]any{"State": "Enabled", "Health": "OK"},
			"ProcessorSummary": map[string]any{"Count": r.o.Sockets, "CoreCount": cores, "LogicalProcessorCount": 2 * cores, "Model": "Test CPU"},
			"MemorySummary":    map[string]any{"TotalSystemMemoryGiB": float64(r.o.MemoryMiB) / 1024},
			"Boot": map[string]any{
				"BootSourceOverrideTarget": r.bootTarget, "BootSourceOverrideEnabled": r.bootOnce, "BootSourceOverrideMode": r.bootMode,
				"BootSourceOverrideTarget@Redfish.AllowableValues": []string{"None", "Pxe", "Hdd", "Cd", "BiosSetup"},
			},
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
				"target":                            sys + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"},
			}},
			"Processors": link(sys + "/Processors"), "Memory": link(sys + "/Memory"),
			"EthernetInterfaces": link(sys + "/EthernetInterfaces"), "NetworkInterfaces": link(sys + "/NetworkInterfaces"),
			"Storage": link(sys + "/Storage"),
			"Links":   map[string]any{"Chassis": []any{link("/redfish/v1/Chassis/1")}, "ManagedBy": []any{link("/redfish/v1/Managers/1")}},
		}, true
	case sys + "/Processors":
		var ms []string
		for i := 1; i <= r.o.Sockets; i++ {
			ms = append(ms, fmt.Sprintf("%s/Processors/CPU%d", sys, i))
		}
		return collection(path, ms...), true
	case sys + "/Memory":
		return collection(path, sys+"/Memory/DIMM1", sys+"/Memory/DIMM2"), true
	case sys + "/Memory/DIMM1", sys + "/Memory/DIMM2":
		return map[string]any{"@odata.id": path, "Id": path[strings.LastIndex(path, "/")+1:], "MemoryType": "DRAM",
			"CapacityMiB": r.o.MemoryMiB / 2, "VolatileSizeMiB": r.o.MemoryMiB / 2, "OperatingSpeedMhz": 3200,
			"Manufacturer": "Nimbus", "Status": map[string]any{"State": "Enabled", "Health": "OK"}}, true
	case sys + "/EthernetInterfaces", sys + "/Storage":
		return collection(path), true
	case sys + "/NetworkInterfaces":
		return collection(path, sys+"/NetworkInterfaces/NIC1"), true
	case sys + "/NetworkInterfaces/NIC1":
		return map[string]any{"@odata.id": path, "Id": "NIC1", "Status": map[string]any{"State": "Enabled", "Health": "OK"},
			"Links": map[string]any{"NetworkAdapter": link("/redfish/v1/Chassis/1/NetworkAdapters/NIC1")}}, true
	case "/redfish/v1/Chassis":
		return collection(path, "/redfish/v1/Chassis/1"), true
	case "/redfish/v1/Chassis/1":
		return map[string]any{"@odata.id": path, "Id": "1", "ChassisType": "RackMount", "Manufacturer": "Nimbus", "Model": "Test Server 9000",
			"SerialNumber": "NB-0001", "NetworkAdapters": link(path + "/NetworkAdapters"), "Status": map[string]any{"State": "Enabled", "Health": "OK"}}, true
	case "/redfish/v1/Chassis/1/NetworkAdapters":
		return collection(path, path+"/NIC1"), true
	case "/redfish/v1/Chassis/1/NetworkAdapters/NIC1":
		return map[string]any{"@odata.id": path, "Id": "NIC1", "Manufacturer": "Nimbus", "Model": "Test NIC",
			"NetworkPorts": link(path + "/NetworkPorts"), "Controllers": []any{}}, true
	case "/redfish/v1/Chassis/1/NetworkAdapters/NIC1/NetworkPorts":
		return collection(path, path+"/1"), true
	case "/redfish/v1/Chassis/1/NetworkAdapters/NIC1/NetworkPorts/1":
		return map[string]any{"@odata.id": path, "Id": "1", "PhysicalPortNumber": "1", "LinkStatus": "Up",
			"ActiveLinkTechnology": "Ethernet", "AssociatedNetworkAddresses": []string{r.o.MAC}, "CurrentLinkSpeedMbps": 10000}, true
	case "/redfish/v1/Managers":
		return collection(path, "/redfish/v1/Managers/1"), true
	case "/redfish/v1/Managers/1":
		return map[string]any{"@odata.id": path, "Id": "1", "Name": "BMC", "ManagerType": "BMC", "FirmwareVersion": "1.2.3",
			"Status": map[string]any{"State": "Enabled", "Health": "OK"}}, true
	}
	if p, ok := strings.CutPrefix(path, sys+"/Processors/CPU"); ok {
		return map[string]any{"@odata.id": path, "Id": "CPU" + p, "Socket": "CPU" + p, "ProcessorType": "CPU",
			"ProcessorArchitecture": "x86", "Manufacturer": "Nimbus", "Model": "Test CPU", "MaxSpeedMHz": r.o.MHz,
			"TotalCores": r.o.CoresPerSocket, "TotalThreads": 2 * r.o.CoresPerSocket, "Status": map[string]any{"State": "Enabled", "Health": "OK"}}, true
	}
	return nil, false
}
