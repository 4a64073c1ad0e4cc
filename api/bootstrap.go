package api

import (
	"context"
	"database/sql"
	"errors"

	"github.com/uptrace/bun"
	"golang.org/x/crypto/bcrypt"

	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/models"
)

// AdminCreds are the root admin's credentials.
type AdminCreds struct {
	Username  string `json:"username"`
	Password  string `json:"password,omitempty"` // only when just created
	APIKey    string `json:"apikey"`
	SecretKey string `json:"secretkey"`
}

// HashPassword is the one password hash Nimbus stores (bcrypt).
func HashPassword(pw string) (string, error) {
	b, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	return string(b), err
}

// EnsureAdmin makes sure the admin account (domain ROOT) has a user "admin"
// with an API key and secret, creating what is missing, and returns them.
func EnsureAdmin(ctx context.Context, db *bun.DB, box *secrets.Box) (AdminCreds, error) {
	var creds AdminCreds
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var acct models.Account
		if err := tx.NewSelect().Model(&acct).Where("uuid = ?", models.AdminAccountUUID).Scan(ctx); err != nil {
			return models.NotFound(err, "admin account (run migrations first)")
		}
		var u models.User
		err := tx.NewSelect().Model(&u).Where("account_id = ? AND username = ?", acct.ID, "admin").Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			creds.Password = secrets.RandomKey(12)
			hash, err := HashPassword(creds.Password)
			if err != nil {
				return err
			}
			u = models.User{UUID: models.NewUUID(), AccountID: acct.ID, Username: "admin", PasswordHash: hash,
				FirstName: "Admin", LastName: "User", State: "enabled", IsDefault: true, Created: models.Now()}
			if _, err := tx.NewInsert().Model(&u).Exec(ctx); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		creds.Username = u.Username
		if u.APIKey != nil && *u.APIKey != "" && u.SecretKeyCipher != "" {
			secret, err := box.Decrypt(u.SecretKeyCipher)
			if err != nil {
				return err
			}
			creds.APIKey, creds.SecretKey = *u.APIKey, secret
			return nil
		}
		apiKey, secret := secrets.RandomKey(48), secrets.RandomKey(48)
		sealed, err := box.Encrypt(secret)
		if err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model(&u).Set("api_key = ?", apiKey).Set("secret_key_cipher = ?", sealed).WherePK().Exec(ctx); err != nil {
			return err
		}
		creds.APIKey, creds.SecretKey = apiKey, secret
		return nil
	})
	return creds, err
}
