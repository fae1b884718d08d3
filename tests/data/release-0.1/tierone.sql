BEGIN TRANSACTION;
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    data TEXT NOT NULL
);
INSERT INTO "accounts" VALUES('acc-1001','jane.doe@example.com','{"account_id":"acc-1001","email":"jane.doe@example.com","name":"Jane Doe","status":"active","mfa_method":"authenticator app","plan":"Business","next_invoice":"2026-12-01, 240.00 EUR","failed_sign_ins":0}');
INSERT INTO "accounts" VALUES('acc-1002','bob.smith@example.com','{"account_id":"acc-1002","email":"bob.smith@example.com","name":"Bob Smith","status":"locked","mfa_method":"authenticator app","plan":"Business","next_invoice":"2026-12-01, 120.00 EUR","failed_sign_ins":6}');
INSERT INTO "accounts" VALUES('acc-1003','priya.patel@example.com','{"account_id":"acc-1003","email":"priya.patel@example.com","name":"Priya Patel","status":"active","mfa_method":"SMS to a phone ending in 42","plan":"Enterprise","next_invoice":"2026-12-15, 1,150.00 EUR","failed_sign_ins":0}');
INSERT INTO "accounts" VALUES('acc-1004','li.wei@example.com','{"account_id":"acc-1004","email":"li.wei@example.com","name":"Li Wei","status":"active","mfa_method":"authenticator app","plan":"Team","next_invoice":"2026-12-03, 60.00 EUR","failed_sign_ins":0}');
INSERT INTO "accounts" VALUES('acc-1005','maria.garcia@example.com','{"account_id":"acc-1005","email":"maria.garcia@example.com","name":"Maria Garcia","status":"locked","mfa_method":"authenticator app","plan":"Business","next_invoice":"2026-12-01, 240.00 EUR","failed_sign_ins":10}');
CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, prefix TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT);
INSERT INTO "api_keys" VALUES('8466192fed93d8e99c6afb126f2a399d354168ee5fb6e9c75cd91e718a38b900','Alex','l2','t1_cYekM2','2026-12-03T07:56:22.556619+00:00',NULL);
CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        account_id TEXT,
        key TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
INSERT INTO "audit" VALUES(1,'2026-11-23T09:19:00+00:00','c_o15BX7bENHI6M_T8','send_code','acc-1001','c_o15BX7bENHI6M_T8:t2:send_code','ok','');
INSERT INTO "audit" VALUES(2,'2026-11-23T09:33:00+00:00','c_o15BX7bENHI6M_T8','verify_identity',NULL,'c_o15BX7bENHI6M_T8:t3:check_code','ok','code did not match');
INSERT INTO "audit" VALUES(3,'2026-11-23T10:27:00+00:00','c_cGYSUggzvbKhymoM','send_code','acc-1002','c_cGYSUggzvbKhymoM:t2:send_code','ok','');
CREATE TABLE client_messages (conversation_id TEXT NOT NULL, client_message_id TEXT NOT NULL, text_hmac TEXT NOT NULL, result TEXT, PRIMARY KEY (conversation_id, client_message_id));
INSERT INTO "client_messages" VALUES('c_o15BX7bENHI6M_T8','m1','43026fc4:8104c268a2fb5aa90fc209ea22cad5aa5ce0563846b5dbd7cc35fa9f24d58264','{"conversation_id": "c_o15BX7bENHI6M_T8", "replies": ["I can help with that (reset a forgotten or expired password). First I need to make sure the account is yours: what''s the email address on your account?"], "stage": "identity", "runbook_id": "password-reset", "confidence": 0.8954, "reasons": ["runbook_matched", "identity_required"], "handoff": null, "latency_ms": 55.771129998902325, "resumed": []}');
INSERT INTO "client_messages" VALUES('c_jwWTwmgS8oU23B1P','mail:5f75bf0bd00363e16fe055cbf119abf6ab4bc2fa6562bcfc472e007263a8f7a9','43026fc4:9929a886e2524584e476cbc7c336ccba7cf7b5c4289dd708a1f4bc379f782ea1','{"conversation_id": "c_jwWTwmgS8oU23B1P", "replies": ["This needs a support technician (report a suspicious email or a phishing link you clicked), so I''m passing it on now. They''ll see everything we''ve discussed, so you won''t need to repeat yourself. Your ticket is HO-2DA3AE949B (priority P1); expect a first reply by 10:16 UTC on Mon 23 Nov. Meanwhile: Don''t click any more links or open any attachments in that message, don''t reply to it, and don''t forward or delete it; the security team needs the original to trace it and block it for everyone. If you typed your password into a page from that message, change your password now from a device you trust, and tell us if you approved any two-factor prompt or gave anyone a code. If you opened an attachment or ran a file, disconnect the computer from the network (turn off Wi-Fi or unplug the cable) but leave it switched on, and don''t use it until a technician contacts you."], "stage": "handed_off", "runbook_id": "phishing-report", "confidence": 0.6391, "reasons": ["tier2_runbook"], "handoff": {"packet_id": "HO-2DA3AE949B", "priority": "P1", "reasons": ["tier2_runbook"], "first_response_due": "2026-11-23T10:16:00+00:00", "resolve_due": "2026-11-23T14:01:00+00:00"}, "latency_ms": 30.363281999598257, "resumed": []}');
CREATE TABLE codes (
        conversation_id TEXT PRIMARY KEY,
        account_id TEXT,
        code_hash TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
CREATE TABLE conversation_status (
    conversation_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    packet_id TEXT,
    technician TEXT,
    updated_at TEXT NOT NULL
);
INSERT INTO "conversation_status" VALUES('c_o15BX7bENHI6M_T8','claimed','HO-FA3A7873DC','Alex','2026-11-23T09:47:00+00:00');
INSERT INTO "conversation_status" VALUES('c_jwWTwmgS8oU23B1P','queued','HO-2DA3AE949B',NULL,'2026-11-23T10:03:00+00:00');
CREATE TABLE conversation_tokens (conversation_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE);
INSERT INTO "conversation_tokens" VALUES('c_o15BX7bENHI6M_T8','52a710998b67c05b81131b95186c756967bf773cd09a070233a59d08c3c89843');
CREATE TABLE conversations (conversation_id TEXT PRIMARY KEY, channel TEXT NOT NULL, created_at TEXT NOT NULL);
INSERT INTO "conversations" VALUES('c_o15BX7bENHI6M_T8','chat','2026-11-23T09:01:00+00:00');
INSERT INTO "conversations" VALUES('c_jwWTwmgS8oU23B1P','email','2026-11-23T09:55:00+00:00');
CREATE TABLE directory_actions (
    key TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE erasures (
    erasure_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    conversations TEXT NOT NULL,
    deleted TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT 'cli'
);
INSERT INTO "erasures" VALUES('ER-052338A906','2026-11-23T10:31:00+00:00','conversation','["c_cGYSUggzvbKhymoM"]','{"checkpoints": 14, "codes": 1, "conversations": 1, "message_mirror": 1, "messages": 4, "outbox_mail": 1, "tool_runs": 1, "vault": 1}','cli');
CREATE TABLE handoff_deliveries (
        packet_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        due REAL NOT NULL,
        last_attempt_at TEXT,
        last_error TEXT,
        delivered_at TEXT
    );
INSERT INTO "handoff_deliveries" VALUES('HO-FA3A7873DC','pending',0,'2026-11-23T09:42:00+00:00',1795426920.0,NULL,NULL,NULL);
INSERT INTO "handoff_deliveries" VALUES('HO-2DA3AE949B','pending',0,'2026-11-23T10:02:00+00:00',1795428120.0,NULL,NULL,NULL);
CREATE TABLE handoff_delivery_attempts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        packet_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        status_code INTEGER,
        detail TEXT NOT NULL DEFAULT ''
    );
CREATE TABLE handoff_desk (
    packet_id TEXT PRIMARY KEY,
    claimed_by TEXT,
    claimed_at TEXT,
    first_response_at TEXT,
    closed_at TEXT
);
INSERT INTO "handoff_desk" VALUES('HO-FA3A7873DC','Alex','2026-11-23T09:45:00+00:00','2026-11-23T09:50:00+00:00',NULL);
CREATE TABLE handoff_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    packet_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    note TEXT
);
INSERT INTO "handoff_events" VALUES(1,'HO-FA3A7873DC','c_o15BX7bENHI6M_T8','2026-11-23T09:44:00+00:00','bot','queued','customer_requested_human');
INSERT INTO "handoff_events" VALUES(2,'HO-FA3A7873DC','c_o15BX7bENHI6M_T8','2026-11-23T09:46:00+00:00','Alex','claimed',NULL);
INSERT INTO "handoff_events" VALUES(3,'HO-FA3A7873DC','c_o15BX7bENHI6M_T8','2026-11-23T09:51:00+00:00','Alex','replied',NULL);
INSERT INTO "handoff_events" VALUES(4,'HO-2DA3AE949B','c_jwWTwmgS8oU23B1P','2026-11-23T10:04:00+00:00','bot','queued','tier2_runbook');
CREATE TABLE handoffs (
    packet_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    priority TEXT NOT NULL,
    first_response_due TEXT NOT NULL,
    status TEXT NOT NULL,
    packet TEXT NOT NULL
);
INSERT INTO "handoffs" VALUES('HO-FA3A7873DC','c_o15BX7bENHI6M_T8','2026-11-23T09:40:00+00:00','P3','2026-11-23T13:41:00+00:00','claimed','{"packet_id":"HO-FA3A7873DC","conversation_id":"c_o15BX7bENHI6M_T8","channel":"chat","created_at":"2026-11-23T09:40:00Z","status":"queued","customer":{"account_id":null,"email":"j***@example.com","verified":false,"verified_at":null,"account_state":null},"category":"account-access","runbook_id":"password-reset","runbook_candidates":[{"runbook_id":"password-reset","score":0.8954},{"runbook_id":"account-lockout","score":0.5929},{"runbook_id":"mfa-device-change","score":0.4983},{"runbook_id":"phishing-report","score":0.4615},{"runbook_id":"vpn-connection","score":0.44}],"sla":{"priority":"P3","first_response_due":"2026-11-23T13:41:00Z","resolve_due":"2026-11-24T09:41:00Z"},"reason_codes":["customer_requested_human"],"attempts":[{"at":"2026-11-23T09:13:00Z","kind":"tool","step":null,"tool":"send_code","ok":true,"detail":"one-time code sent to the contact on file, if the account exists","idempotency_key":"c_o15BX7bENHI6M_T8:t2:send_code","args":{"email":"j***@example.com"},"result":{"account_found":true}},{"at":"2026-11-23T09:29:00Z","kind":"tool","step":null,"tool":"verify_identity","ok":false,"detail":"code did not match","idempotency_key":null,"args":{},"result":{}}],"hypothesis":"Likely reset a forgotten or expired password ([secret]). Tried: send_code (ok); verify_identity (failed). The reset link was sent and the customer still cannot sign in. Check whether the account is\nsynced from the on-premises directory (a cloud-side reset does not apply there), whether the sign-in\nlogs show a conditional-access block, and whether the mailbox received the link. Handed off because: customer_requested_human.","summary":"I forgot my password","transcript":[{"at":"2026-11-23T09:02:00Z","role":"customer","text":"I forgot my password","channel":"chat"},{"at":"2026-11-23T09:06:00Z","role":"bot","text":"I can help with that (reset a forgotten or expired password). First I need to make sure the account is yours: what''s the email address on your account?","channel":"chat"},{"at":"2026-11-23T09:08:00Z","role":"customer","text":"[email]","channel":"chat"},{"at":"2026-11-23T09:22:00Z","role":"bot","text":"If j***@example.com belongs to an account, I''ve just sent a 6-digit code to the contact on file. Please type the code here; it expires in 10 minutes.","channel":"chat"},{"at":"2026-11-23T09:24:00Z","role":"customer","text":"[code]","channel":"chat"},{"at":"2026-11-23T09:36:00Z","role":"bot","text":"That code didn''t match. Please check the newest message and type the code again (2 tries left).","channel":"chat"},{"at":"2026-11-23T09:37:00Z","role":"customer","text":"no, get me a human","channel":"chat"},{"at":"2026-11-23T09:40:00Z","role":"bot","text":"Of course, I''m passing you to a support technician. They''ll see everything we''ve discussed, so you won''t need to repeat yourself. Your ticket is HO-FA3A7873DC (priority P3); expect a first reply by 13:41 UTC on Mon 23 Nov.","channel":"chat"}],"sentiment":{"score":0.0,"label":"neutral"},"summary_en":null,"language":"en","usage":{"prompt_tokens":0,"completion_tokens":0,"estimated_cost":0.0}}');
INSERT INTO "handoffs" VALUES('HO-2DA3AE949B','c_jwWTwmgS8oU23B1P','2026-11-23T10:00:00+00:00','P1','2026-11-23T10:16:00+00:00','queued','{"packet_id":"HO-2DA3AE949B","conversation_id":"c_jwWTwmgS8oU23B1P","channel":"email","created_at":"2026-11-23T10:00:00Z","status":"queued","customer":{"account_id":null,"email":null,"verified":false,"verified_at":null,"account_state":null},"category":"security","runbook_id":"phishing-report","runbook_candidates":[{"runbook_id":"phishing-report","score":0.6391},{"runbook_id":"vpn-connection","score":0.59},{"runbook_id":"password-reset","score":0.4474},{"runbook_id":"service-status","score":0.3983},{"runbook_id":"account-lockout","score":0.3903}],"sla":{"priority":"P1","first_response_due":"2026-11-23T10:16:00Z","resolve_due":"2026-11-23T14:01:00Z"},"reason_codes":["tier2_runbook"],"attempts":[],"hypothesis":"Likely report a suspicious email or a phishing link you clicked (phishing-report). Treat as a possible compromise until shown otherwise. Get the original message as an attachment\n(with full headers) and search the mail system for other recipients; purge and block the sender,\ndomain and URLs. If credentials were entered: force a password reset, revoke sessions and refresh\ntokens, review sign-in logs and MFA registrations, and check for new inbox rules or forwarding. If\nan attachment was opened: isolate the device through endpoint protection and run a full scan. Handed off because: tier2_runbook.","summary":"VPN\n\nI clicked a link in a phishing email and typed my password","transcript":[{"at":"2026-11-23T09:56:00Z","role":"customer","text":"VPN\n\nI clicked a link in a phishing email and typed my password","channel":"email"},{"at":"2026-11-23T10:00:00Z","role":"bot","text":"This needs a support technician (report a suspicious email or a phishing link you clicked), so I''m passing it on now. They''ll see everything we''ve discussed, so you won''t need to repeat yourself. Your ticket is HO-2DA3AE949B (priority P1); expect a first reply by 10:16 UTC on Mon 23 Nov. Meanwhile: Don''t click any more links or open any attachments in that message, don''t reply to it, and don''t forward or delete it; the security team needs the original to trace it and block it for everyone. If you typed your password into a page from that message, change your password now from a device you trust, and tell us if you approved any two-factor prompt or gave anyone a code. If you opened an attachment or ran a file, disconnect the computer from the network (turn off Wi-Fi or unplug the cable) but leave it switched on, and don''t use it until a technician contacts you.","channel":"email"}],"sentiment":{"score":0.0,"label":"neutral"},"summary_en":null,"language":"en","usage":{"prompt_tokens":0,"completion_tokens":0,"estimated_cost":0.0}}');
CREATE TABLE mail_contacts (
    address_hash TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (address_hash, conversation_id)
);
INSERT INTO "mail_contacts" VALUES('d2a70b5ca22eb871726e712383a3a7dc17f1d06ec4843ced38317ebf78e27ead','c_jwWTwmgS8oU23B1P','2026-11-23T10:05:00+00:00');
CREATE TABLE mail_in (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT,
    matched TEXT,
    played INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL
);
INSERT INTO "mail_in" VALUES('<1@client.example>','c_jwWTwmgS8oU23B1P','new',1,'2026-11-23T09:52:00+00:00');
CREATE TABLE mail_out (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    inbound_id TEXT,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT,
    in_reply_to TEXT,
    refs TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
INSERT INTO "mail_out" VALUES('<179628458244.5681.1347671470128241117@tierone.local>','c_jwWTwmgS8oU23B1P','<1@client.example>','p***@example.org','Re: VPN',NULL,'<1@client.example>','<1@client.example>','sent',1,NULL,'2026-11-23T10:06:00+00:00','2026-11-23T10:08:00+00:00');
CREATE TABLE mail_threads (
    conversation_id TEXT PRIMARY KEY,
    reply_to TEXT NOT NULL,
    subject TEXT NOT NULL,
    last_in TEXT NOT NULL,
    refs TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO "mail_threads" VALUES('c_jwWTwmgS8oU23B1P','sealed:gAAAAABrESCmgrnMcVeWNaf0GDdq67wbxqjobmPb2wo2gCnqTP8aKkdHegLhE5HQ66cXRbt7jE2nKXa26wtqWnu75v7c6giZ1Rt1jGnauSEge_Gf9ri5htE=','VPN','<1@client.example>','<1@client.example> <179628458244.5681.1347671470128241117@tierone.local>','2026-11-23T10:06:00+00:00');
CREATE TABLE message_mirror (
    conversation_id TEXT PRIMARY KEY,
    graph_lines INTEGER NOT NULL
);
INSERT INTO "message_mirror" VALUES('c_o15BX7bENHI6M_T8',8);
INSERT INTO "message_mirror" VALUES('c_jwWTwmgS8oU23B1P',2);
CREATE TABLE messages (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    at TEXT NOT NULL,
    channel TEXT NOT NULL,
    author TEXT,
    PRIMARY KEY (conversation_id, seq)
);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',1,'customer','I forgot my password','2026-11-23T09:02:00+00:00','chat',NULL);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',2,'bot','I can help with that (reset a forgotten or expired password). First I need to make sure the account is yours: what''s the email address on your account?','2026-11-23T09:06:00+00:00','chat',NULL);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',3,'customer','[email]','2026-11-23T09:08:00+00:00','chat',NULL);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',4,'bot','If j***@example.com belongs to an account, I''ve just sent a 6-digit code to the contact on file. Please type the code here; it expires in 10 minutes.','2026-11-23T09:22:00+00:00','chat',NULL);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',5,'customer','[code]','2026-11-23T09:24:00+00:00','chat',NULL);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',6,'bot','That code didn''t match. Please check the newest message and type the code again (2 tries left).','2026-11-23T09:36:00+00:00','chat',NULL);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',7,'customer','no, get me a human','2026-11-23T09:37:00+00:00','chat',NULL);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',8,'bot','Of course, I''m passing you to a support technician. They''ll see everything we''ve discussed, so you won''t need to repeat yourself. Your ticket is HO-FA3A7873DC (priority P3); expect a first reply by 13:41 UTC on Mon 23 Nov.','2026-11-23T09:40:00+00:00','chat',NULL);
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',9,'system','Alex from the support team has joined the conversation.','2026-11-23T09:48:00+00:00','chat','Alex');
INSERT INTO "messages" VALUES('c_o15BX7bENHI6M_T8',10,'technician','I am looking at your account now.','2026-11-23T09:50:00+00:00','chat','Alex');
INSERT INTO "messages" VALUES('c_jwWTwmgS8oU23B1P',1,'customer','VPN

I clicked a link in a phishing email and typed my password','2026-11-23T09:56:00+00:00','email',NULL);
INSERT INTO "messages" VALUES('c_jwWTwmgS8oU23B1P',2,'bot','This needs a support technician (report a suspicious email or a phishing link you clicked), so I''m passing it on now. They''ll see everything we''ve discussed, so you won''t need to repeat yourself. Your ticket is HO-2DA3AE949B (priority P1); expect a first reply by 10:16 UTC on Mon 23 Nov. Meanwhile: Don''t click any more links or open any attachments in that message, don''t reply to it, and don''t forward or delete it; the security team needs the original to trace it and block it for everyone. If you typed your password into a page from that message, change your password now from a device you trust, and tell us if you approved any two-factor prompt or gave anyone a code. If you opened an attachment or ran a file, disconnect the computer from the network (turn off Wi-Fi or unplug the cable) but leave it switched on, and don''t use it until a technician contacts you.','2026-11-23T10:00:00+00:00','email',NULL);
CREATE TABLE services (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
INSERT INTO "services" VALUES('email','{"name":"email","state":"operational","note":"","aliases":["mail","outlook","inbox"]}');
INSERT INTO "services" VALUES('vpn','{"name":"vpn","state":"operational","note":"","aliases":["remote access"]}');
INSERT INTO "services" VALUES('sso','{"name":"sso","state":"operational","note":"","aliases":["single sign-on","sign-in","login"]}');
INSERT INTO "services" VALUES('customer portal','{"name":"customer portal","state":"operational","note":"","aliases":["portal","website"]}');
INSERT INTO "services" VALUES('file sharing','{"name":"file sharing","state":"operational","note":"","aliases":["sharepoint","onedrive","shared drive","file share"]}');
INSERT INTO "services" VALUES('video meetings','{"name":"video meetings","state":"operational","note":"","aliases":["teams","zoom","meetings"]}');
INSERT INTO "services" VALUES('payments','{"name":"payments","state":"degraded","note":"Card payments are slower than usual; no payment is lost.","aliases":["payment","checkout","card"]}');
INSERT INTO "services" VALUES('api','{"name":"api","state":"operational","note":"","aliases":["rest api","webhooks"]}');
CREATE TABLE tool_runs (
        key TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        account_id TEXT,
        status TEXT NOT NULL,
        result TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT
    );
INSERT INTO "tool_runs" VALUES('c_o15BX7bENHI6M_T8:t2:send_code','c_o15BX7bENHI6M_T8','send_code','acc-1001','done','{"tool": "send_code", "ok": true, "message": "If j***@example.com belongs to an account, I''ve just sent a 6-digit code to the contact on file. Please type the code here; it expires in 10 minutes.", "data": {"account_found": true}, "idempotency_key": "c_o15BX7bENHI6M_T8:t2:send_code", "replayed": false, "error": null}','2026-11-23T09:16:00+00:00','2026-11-23T09:19:00+00:00');
INSERT INTO "tool_runs" VALUES('c_o15BX7bENHI6M_T8:t3:check_code','c_o15BX7bENHI6M_T8','verify_identity',NULL,'done','{}','2026-11-23T09:31:00+00:00','2026-11-23T09:33:00+00:00');
CREATE INDEX handoff_deliveries_due ON handoff_deliveries (status, due);
CREATE INDEX handoffs_due ON handoffs (status, first_response_due);
CREATE INDEX handoff_events_packet ON handoff_events (packet_id, id);
CREATE INDEX mail_out_pending ON mail_out (status, created_at);
CREATE INDEX mail_contacts_conversation ON mail_contacts (conversation_id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('audit',3);
INSERT INTO "sqlite_sequence" VALUES('handoff_events',4);
COMMIT;
