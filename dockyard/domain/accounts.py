"""Accounts, IAM users, access keys and inline user policies: what `dockyard admin` and the IAM API manage."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from typing import Final

from dockyard.domain.clock import Clock, utc_now
from dockyard.domain.encryption import SYSTEM_ACCOUNT
from dockyard.domain.errors import DockyardError, ErrorKind
from dockyard.domain.iam import new_access_key_id, new_secret_access_key
from dockyard.domain.keys import SecretBox
from dockyard.domain.names import check_account
from dockyard.domain.policies import Policy, PolicyInvalid
from dockyard.domain.ports import AccessKeyInfo, Credential, IamUser, MetadataStore

USER_NAME_RE: Final = re.compile(r"[\w+=,.@-]{1,64}")
POLICY_NAME_RE: Final = re.compile(r"[\w+=,.@-]{1,128}")
PATH_RE: Final = re.compile(r"/(?:[\x21-\x7e]*/)?")
MAX_KEYS_PER_USER: Final = 2
MAX_POLICY_BYTES: Final = 2048 * 5  # IAM's inline-policy budget per user, approximately


# The IAM API's error codes (query protocol: the wire code has no "Exception" suffix).
class NoSuchEntity(DockyardError):
    kind = ErrorKind("NAME_UNKNOWN", 404, "NoSuchEntity", "The entity does not exist")


class EntityAlreadyExists(DockyardError):
    kind = ErrorKind("DENIED", 409, "EntityAlreadyExists", "The entity already exists")


class DeleteConflict(DockyardError):
    kind = ErrorKind("DENIED", 409, "DeleteConflict", "The entity still has subordinate entities")


class MalformedPolicyDocument(DockyardError):
    kind = ErrorKind("DENIED", 400, "MalformedPolicyDocument", "The policy document is malformed")


class IamLimitExceeded(DockyardError):
    kind = ErrorKind("DENIED", 409, "LimitExceeded", "A limit was exceeded")


class InvalidInput(DockyardError):
    kind = ErrorKind("UNSUPPORTED", 400, "InvalidInput", "The input is invalid")


@dataclass(frozen=True)
class NewAccessKey:
    info: AccessKeyInfo
    secret_access_key: str  # shown once, never stored in clear


class Accounts:
    def __init__(self, store: MetadataStore, box: SecretBox, clock: Clock = utc_now) -> None:
        self.store = store
        self.box = box
        self.clock = clock

    # ------------------------------------------------------------------------------------ accounts

    def create_account(self, account_id: str) -> None:
        self.store.ensure_account(check_account(account_id), self.clock())

    def list_accounts(self) -> list[str]:
        return [account for account in self.store.list_accounts() if account != SYSTEM_ACCOUNT]

    def delete_account(self, account_id: str) -> None:
        if account_id not in self.list_accounts():
            raise NoSuchEntity(f"The account {account_id} does not exist.")
        if not self.store.delete_account(account_id):
            raise DeleteConflict(f"Account {account_id} still owns repositories; delete them first.")

    # ------------------------------------------------------------------------------------ users

    def create_user(self, account_id: str, user_name: str, path: str = "/") -> IamUser:
        _check(USER_NAME_RE, user_name, "UserName")
        _check(PATH_RE, path, "Path")
        user_id = "AIDA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(17))
        user = IamUser(account_id, user_name, user_id, path, self.clock())
        if not self.store.create_user(user):
            raise EntityAlreadyExists(f"User with name {user_name} already exists.")
        return user

    def user(self, account_id: str, user_name: str) -> IamUser:
        user = self.store.get_user(account_id, user_name)
        if user is None:
            raise NoSuchEntity(f"The user with name {user_name} cannot be found.")
        return user

    def list_users(self, account_id: str) -> list[IamUser]:
        return self.store.list_users(account_id)

    def delete_user(self, account_id: str, user_name: str) -> None:
        self.user(account_id, user_name)
        if self.store.list_access_keys(account_id, user_name) or self.store.user_policies(account_id, user_name):
            raise DeleteConflict("Cannot delete entity, must delete access keys and policies first.")
        self.store.delete_user(account_id, user_name)

    # ------------------------------------------------------------------------------------ access keys

    def create_access_key(self, account_id: str, user_name: str | None) -> NewAccessKey:
        """A key pair for a user, or for the account's root user when `user_name` is None."""
        if user_name is not None:
            self.user(account_id, user_name)
            if len(self.store.list_access_keys(account_id, user_name)) >= MAX_KEYS_PER_USER:
                raise IamLimitExceeded(f"Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}")
        now = self.clock()
        key_id, secret = new_access_key_id(), new_secret_access_key()
        self.store.add_credential(Credential(key_id, self.box.seal(secret), account_id, user_name), now)
        return NewAccessKey(AccessKeyInfo(key_id, account_id, user_name, now), secret)

    def list_access_keys(self, account_id: str, user_name: str | None) -> list[AccessKeyInfo]:
        if user_name is not None:
            self.user(account_id, user_name)
        return self.store.list_access_keys(account_id, user_name)

    def delete_access_key(self, account_id: str, user_name: str | None, access_key_id: str) -> None:
        owned = {key.access_key_id for key in self.list_access_keys(account_id, user_name)}
        if access_key_id not in owned:
            raise NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found.")
        self.store.delete_credential(access_key_id)

    # ------------------------------------------------------------------------------------ policies

    def put_user_policy(self, account_id: str, user_name: str, policy_name: str, document: str) -> None:
        self.user(account_id, user_name)
        _check(POLICY_NAME_RE, policy_name, "PolicyName")
        try:
            Policy.parse(document, kind="identity")
        except PolicyInvalid as error:
            raise MalformedPolicyDocument(error.message) from None
        existing = self.store.user_policies(account_id, user_name)
        total = sum(len(text) for name, text in existing.items() if name != policy_name) + len(document)
        if total > MAX_POLICY_BYTES:
            raise IamLimitExceeded(f"Maximum policy size of {MAX_POLICY_BYTES} bytes exceeded for user {user_name}")
        self.store.put_user_policy(account_id, user_name, policy_name, document)

    def user_policy(self, account_id: str, user_name: str, policy_name: str) -> str:
        self.user(account_id, user_name)
        document = self.store.user_policies(account_id, user_name).get(policy_name)
        if document is None:
            raise NoSuchEntity(f"The user policy with name {policy_name} cannot be found.")
        return document

    def list_user_policies(self, account_id: str, user_name: str) -> list[str]:
        self.user(account_id, user_name)
        return sorted(self.store.user_policies(account_id, user_name))

    def delete_user_policy(self, account_id: str, user_name: str, policy_name: str) -> None:
        self.user_policy(account_id, user_name, policy_name)
        self.store.delete_user_policy(account_id, user_name, policy_name)


def _check(pattern: re.Pattern[str], value: str, member: str) -> None:
    if not pattern.fullmatch(value):
        raise InvalidInput(f"The specified value for {member} is invalid: {value!r}")
