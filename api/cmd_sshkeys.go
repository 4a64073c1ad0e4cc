package api

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"

	"github.com/uptrace/bun"
	"golang.org/x/crypto/ssh"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

// ownerParams are the parameters by which an admin acts for another
// account (CloudStack's account + domainid).
func ownerParams(what string) []Param {
	return []Param{
		{Name: "account", Type: TString, Description: "an account for the " + what + " (admins); with domainid"},
		{Name: "domainid", Type: TUUID, Description: "the domain of account"},
	}
}

func init() {
	Register(
		&Command{
			Name: "createSSHKeyPair", Description: "Creates an SSH key pair and returns its private key, which is not kept", Access: AccessAllWrite,
			Params:       append([]Param{{Name: "name", Type: TString, Required: true, Description: "the name of the key pair, unique within the account"}}, ownerParams("key pair")...),
			ResponseName: "keypair", Response: append(append([]Field{}, sshKeyPairFields...), Field{"privatekey", "string", "the private key in PEM (returned only here)"}),
			Handler: createSSHKeyPair,
		},
		&Command{
			Name: "registerSSHKeyPair", Description: "Registers a public key under a name", Access: AccessAllWrite,
			Params: append([]Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the key pair, unique within the account"},
				{Name: "publickey", Type: TString, Required: true, Length: 5120, Description: "the public key, in OpenSSH authorized_keys form"},
			}, ownerParams("key pair")...),
			ResponseName: "keypair", Response: sshKeyPairFields, Handler: registerSSHKeyPair,
		},
		&Command{
			Name: "listSSHKeyPairs", Description: "Lists SSH key pairs", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the key pair"},
				Param{Name: "name", Type: TString, Description: "the name of the key pair"},
				Param{Name: "fingerprint", Type: TString, Description: "the MD5 fingerprint of the public key"},
			),
			ResponseName: "sshkeypair", Response: sshKeyPairFields, Handler: listSSHKeyPairs,
		},
		&Command{
			Name: "deleteSSHKeyPair", Description: "Deletes an SSH key pair of an account by name", Access: AccessAllWrite,
			Params:       append([]Param{{Name: "name", Type: TString, Required: true, Description: "the name of the key pair"}}, ownerParams("key pair")...),
			ResponseName: "success", Response: successFields, Handler: deleteSSHKeyPair,
		},
	)
}

var sshKeyPairFields = []Field{
	{"id", "string", "the ID of the key pair"},
	{"name", "string", "the name of the key pair"},
	{"fingerprint", "string", "the MD5 fingerprint of the public key (colon-separated hex)"},
	{"account", "string", "the owner account"},
	{"domainid", "string", "the owner's domain ID"},
	{"domain", "string", "the owner's domain name"},
	{"hasannotations", "boolean", "whether the key pair has annotations"},
}

// SSHKeyPairView is a key pair as the SDK's SSHKeyPair and
// CreateSSHKeyPairResponse decode it.
type SSHKeyPairView struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Fingerprint    string `json:"fingerprint"`
	Account        string `json:"account"`
	DomainID       string `json:"domainid"`
	Domain         string `json:"domain"`
	DomainPath     string `json:"domainpath,omitempty"`
	HasAnnotations bool   `json:"hasannotations"`
	PrivateKey     string `json:"privatekey,omitempty"`
}

func sshKeyPairView(k *models.SSHKeyPair, o *owner) SSHKeyPairView {
	v := SSHKeyPairView{ID: k.UUID, Name: k.Name, Fingerprint: k.Fingerprint}
	if o != nil {
		v.Account, v.DomainID, v.Domain, v.DomainPath = o.Account.Name, o.Domain.UUID, o.Domain.Name, o.domainPath()
	}
	return v
}

// actingOwner is the account a command acts for: the caller's own, or with
// account (and domainid; the caller's domain without it) an account the
// caller administers (531 otherwise; users may name only themselves).
func (c *Call) actingOwner() (*owner, error) {
	self := &owner{Account: c.Caller.Account, Domain: c.Caller.Domain, Role: c.Caller.Role}
	name := c.Str("account")
	if name == "" {
		return self, nil
	}
	dom := &c.Caller.Domain
	if c.Has("domainid") {
		d, err := c.DomainByUUID(c.Str("domainid"))
		if err != nil {
			return nil, err
		}
		dom = d
	}
	if !c.CanAccessDomain(dom) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have access to domain %s", dom.UUID)
	}
	var a models.Account
	if err := c.S.DB.NewSelect().Model(&a).Where("domain_id = ? AND name = ?", dom.ID, name).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Unable to find account %s in domain %s", clip(name, 64), dom.UUID)
		}
		return nil, err
	}
	if a.ID == c.Caller.Account.ID {
		return self, nil
	}
	owners, err := ownersOf(c.Ctx, c.S.DB, []models.Account{a})
	if err != nil {
		return nil, err
	}
	o := owners[a.ID]
	if !c.CanAdminAccount(&o.Account, &o.Domain) {
		return nil, cserr.New(cserr.AccountError, "The caller does not have permission to act for account %s", clip(name, 64))
	}
	return o, nil
}

// canActFor tells whether the caller may change what account o owns: its
// own account, or one it administers.
func (c *Call) canActFor(o *owner) bool {
	return o.Account.ID == c.Caller.Account.ID || c.CanAdminAccount(&o.Account, &o.Domain)
}

// insertKeyPair stores a key pair whose name (and, with checkKey, public
// key) is unique within its account.
func (c *Call) insertKeyPair(k *models.SSHKeyPair, checkKey bool) error {
	return c.S.DB.RunInTx(c.Ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if ok, err := tx.NewSelect().Model((*models.SSHKeyPair)(nil)).Where("account_id = ? AND keypair_name = ?", k.AccountID, k.Name).Exists(ctx); err != nil {
			return err
		} else if ok {
			return cserr.Param("A key pair with name '%s' already exists for this account", clip(k.Name, 64))
		}
		if checkKey {
			if ok, err := tx.NewSelect().Model((*models.SSHKeyPair)(nil)).Where("account_id = ? AND fingerprint = ?", k.AccountID, k.Fingerprint).Exists(ctx); err != nil {
				return err
			} else if ok {
				return cserr.Param("A key pair with fingerprint %s is already registered for this account", k.Fingerprint)
			}
		}
		if _, err := tx.NewInsert().Model(k).Exec(ctx); err != nil {
			if isDuplicate(err) {
				return cserr.Param("A key pair with name '%s' already exists for this account", clip(k.Name, 64))
			}
			return err
		}
		return nil
	})
}

func createSSHKeyPair(c *Call) (any, error) {
	o, err := c.actingOwner()
	if err != nil {
		return nil, err
	}
	name, err := checkName("name", c.Str("name"))
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := ssh.NewPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	k := &models.SSHKeyPair{
		UUID: models.NewUUID(), Name: name, Fingerprint: ssh.FingerprintLegacyMD5(pub),
		PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))),
		AccountID: o.Account.ID, DomainID: o.Account.DomainID, Created: models.Now(),
	}
	if err := c.insertKeyPair(k, false); err != nil {
		return nil, err
	}
	c.Event("CREATE_SSH_KEY_PAIR", "SSHKeyPair", k.UUID, "Created SSH key pair "+name+" for account "+o.Account.Name)
	v := sshKeyPairView(k, o)
	v.PrivateKey = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	return Object{"keypair": v}, nil
}

// parsePublicKey validates an OpenSSH public key (one authorized_keys line,
// options dropped) and returns it normalized with its MD5 fingerprint.
func parsePublicKey(text string) (normalized, fingerprint string, err error) {
	text = strings.TrimSpace(text)
	pub, comment, _, rest, perr := ssh.ParseAuthorizedKey([]byte(text))
	if perr != nil {
		return "", "", cserr.Param("Public key is invalid: %s", perr.Error())
	}
	if strings.TrimSpace(string(rest)) != "" {
		return "", "", cserr.Param("Public key is invalid: give one key, not several")
	}
	normalized = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		normalized += " " + comment
	}
	return normalized, ssh.FingerprintLegacyMD5(pub), nil
}

func registerSSHKeyPair(c *Call) (any, error) {
	o, err := c.actingOwner()
	if err != nil {
		return nil, err
	}
	name, err := checkName("name", c.Str("name"))
	if err != nil {
		return nil, err
	}
	pub, fp, err := parsePublicKey(c.Str("publickey"))
	if err != nil {
		return nil, err
	}
	k := &models.SSHKeyPair{
		UUID: models.NewUUID(), Name: name, Fingerprint: fp, PublicKey: pub,
		AccountID: o.Account.ID, DomainID: o.Account.DomainID, Created: models.Now(),
	}
	if err := c.insertKeyPair(k, true); err != nil {
		return nil, err
	}
	c.Event("REGISTER_SSH_KEY_PAIR", "SSHKeyPair", k.UUID, "Registered SSH key pair "+name+" for account "+o.Account.Name)
	return Object{"keypair": sshKeyPairView(k, o)}, nil
}

func listSSHKeyPairs(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	var keys []models.SSHKeyPair
	q := c.S.DB.NewSelect().Model(&keys).Apply(scope.Modifier("ssh_key_pair.account_id", "ssh_key_pair.domain_id"))
	if c.Has("fingerprint") {
		q = q.Where("ssh_key_pair.fingerprint = ?", strings.ToLower(c.Str("fingerprint")))
	}
	q = c.Filtered(q, Filter{ID: "ssh_key_pair.uuid", Name: "ssh_key_pair.keypair_name", Keyword: []string{"ssh_key_pair.keypair_name"}}).
		Order("ssh_key_pair.id")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.AccountID)
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, ids)
	if err != nil {
		return nil, err
	}
	views := make([]SSHKeyPairView, 0, len(keys))
	for i := range keys {
		views = append(views, sshKeyPairView(&keys[i], owners[keys[i].AccountID]))
	}
	return List{Key: "sshkeypair", Count: n, Items: views}, nil
}

func deleteSSHKeyPair(c *Call) (any, error) {
	o, err := c.actingOwner()
	if err != nil {
		return nil, err
	}
	name := c.Str("name")
	var k models.SSHKeyPair
	if err := c.S.DB.NewSelect().Model(&k).Where("account_id = ? AND keypair_name = ?", o.Account.ID, name).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("A key pair with name '%s' does not exist for account %s in domain %s", clip(name, 64), o.Account.Name, o.domainPath())
		}
		return nil, err
	}
	res, err := c.S.DB.NewDelete().Model((*models.SSHKeyPair)(nil)).Where("id = ?", k.ID).Exec(c.Ctx)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, cserr.Param("A key pair with name '%s' does not exist for account %s in domain %s", clip(name, 64), o.Account.Name, o.domainPath())
	}
	c.Event("DELETE_SSH_KEY_PAIR", "SSHKeyPair", k.UUID, "Deleted SSH key pair "+k.Name+" of account "+o.Account.Name)
	return Success{Success: true}, nil
}
