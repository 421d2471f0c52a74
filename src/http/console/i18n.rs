//! The console's languages: English and Simplified Chinese, chosen by the `stevedore_lang`
//! cookie (set by the language link) or else `Accept-Language`, and the message catalogue.
//! Only words live here; pages decide what to say.

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// The code used in the cookie, the link and `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The language a cookie value or a link names.
    pub fn from_code(s: &str) -> Option<Lang> {
        let primary = s.split(['-', '_']).next().unwrap_or(s);
        if primary.eq_ignore_ascii_case("zh") {
            Some(Lang::Zh)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The preferred language of an `Accept-Language` header (highest `q` first, ties in
    /// order); English when it names neither.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if let Some(lang) = Lang::from_code(tag)
                && q > 0.0
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or(Lang::En)
    }

    /// The other language (the switch link offers it).
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }

    /// The language's own name.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Zh => "简体中文",
        }
    }

    /// The message `key` in this language (the key itself when the catalogue lacks it, which
    /// a test rules out for every key the pages use).
    pub fn t(self, key: &'static str) -> &'static str {
        match MESSAGES.iter().find(|(k, _, _)| *k == key) {
            Some((_, en, zh)) => match self {
                Lang::En => en,
                Lang::Zh => zh,
            },
            None => key,
        }
    }
}

/// `(key, English, Simplified Chinese)`.
pub const MESSAGES: &[(&str, &str, &str)] = &[
    ("app", "stevedore console", "stevedore 控制台"),
    ("nav.repos", "Repositories", "仓库"),
    ("nav.dashboard", "Mirror dashboard", "镜像加速看板"),
    ("nav.maintenance", "Maintenance", "维护"),
    ("nav.users", "Users", "用户"),
    ("nav.roles", "Roles", "角色"),
    // Users and roles pages (auth.builtin).
    (
        "acct.not_builtin",
        "Users and roles are kept by stevedore only with auth.builtin; this registry uses another kind of authentication.",
        "只有配置 auth.builtin 时，用户和角色才由 stevedore 管理；本仓库使用其他认证方式。",
    ),
    ("acct.change", "Change", "修改"),
    ("acct.grant", "Give role", "授予角色"),
    ("acct.passwd", "Set password", "设置密码"),
    ("acct.delete", "Delete", "删除"),
    ("acct.user_add", "Add a user", "添加用户"),
    ("acct.role", "Role", "角色"),
    ("acct.role_add", "Add a role", "添加角色"),
    ("acct.rules", "Rules", "规则"),
    ("acct.rule_add", "Add rule", "添加规则"),
    ("acct.glob", "Repository glob", "仓库通配符"),
    ("acct.kind.builtin", "built-in", "内置"),
    ("acct.kind.custom", "custom", "自定义"),
    ("acct.kind.anonymous", "without login", "无需登录"),
    (
        "acct.anonymous_note",
        "A rule grants actions on the repositories its glob matches (* matches anything, / included). The anonymous role says what may be pulled without logging in (pull only).",
        "规则授予对匹配通配符的仓库的操作（* 匹配任意字符，包括 /）。anonymous 角色规定无需登录即可拉取的仓库（只能授予 pull）。",
    ),
    ("login", "Log in", "登录"),
    ("logout", "Log out", "退出"),
    ("login.user", "User name", "用户名"),
    ("login.password", "Password", "密码"),
    (
        "login.failed",
        "Wrong user name or password.",
        "用户名或密码错误。",
    ),
    (
        "login.unsupported",
        "This registry uses an external token server: the console cannot check passwords. Log in at the token server's own pages.",
        "本仓库使用外部令牌服务器：控制台无法校验密码，请在令牌服务器的页面登录。",
    ),
    (
        "login.needed",
        "Log in to see this page.",
        "请登录后查看此页面。",
    ),
    ("login.as", "Logged in as", "当前用户"),
    ("role.admin", "administrator", "管理员"),
    ("role.viewer", "viewer", "只读用户"),
    ("role.anonymous", "anonymous", "匿名"),
    (
        "open.notice",
        "No auth is configured: the console is read-only. Configure auth to enable deletes, GC, evict and warm.",
        "未配置认证：控制台只读。配置 auth 后可删除、垃圾回收、清除缓存和预热。",
    ),
    (
        "csrf.refused",
        "The form is stale or was not sent from this console (missing or wrong CSRF token). Reload the page and try again.",
        "表单已过期或不是从本控制台提交的（CSRF 令牌缺失或错误）。请刷新页面后重试。",
    ),
    (
        "forbidden",
        "Your role does not allow this.",
        "您的角色不允许此操作。",
    ),
    ("not_found", "Not found.", "未找到。"),
    ("search", "Search", "搜索"),
    ("search.prefix", "Name starts with", "名称前缀"),
    ("next", "Next page", "下一页"),
    ("first", "First page", "第一页"),
    ("none", "Nothing here yet.", "暂无内容。"),
    ("repo", "Repository", "仓库"),
    ("kind", "Kind", "类型"),
    ("kind.local", "local", "本地推送"),
    ("kind.cached", "cached", "缓存"),
    ("kind.mixed", "local + cached", "本地 + 缓存"),
    ("size", "Size", "大小"),
    ("tags", "Tags", "标签"),
    ("tag", "Tag", "标签"),
    ("last_pushed", "Last pushed", "最近推送"),
    ("last_pulled", "Last pulled", "最近拉取"),
    ("pulls", "Pulls", "拉取次数"),
    ("digest", "Digest", "摘要"),
    ("platforms", "Platforms", "平台"),
    ("created", "Created", "创建时间"),
    ("source", "Source", "来源"),
    ("source.pushed", "pushed", "推送"),
    ("source.cached", "cached", "缓存"),
    ("actions", "Actions", "操作"),
    ("delete", "Delete", "删除"),
    ("delete.tag", "Delete tag", "删除标签"),
    (
        "delete.manifest",
        "Delete manifest (and its tags)",
        "删除清单（及其标签）",
    ),
    (
        "delete.disabled",
        "Deletes are disabled (storage.delete.enabled).",
        "删除功能未启用（storage.delete.enabled）。",
    ),
    ("deleted", "Deleted.", "已删除。"),
    ("manifest", "Manifest", "清单"),
    ("media_type", "Media type", "媒体类型"),
    ("layers", "Layers", "层"),
    ("config", "Config", "配置"),
    (
        "referrers",
        "Referrers (signatures, SBOMs, …)",
        "引用者（签名、SBOM 等）",
    ),
    ("artifact_type", "Artifact type", "制品类型"),
    ("cached", "Cached here", "已缓存"),
    ("yes", "yes", "是"),
    ("no", "no", "否"),
    ("never", "never", "从未"),
    ("unknown", "unknown", "未知"),
    (
        "manifest.not_stored",
        "This manifest is not stored here (opening a page never asks an upstream).",
        "此清单未存储在本地（打开页面不会请求上游）。",
    ),
    ("dash.hit_ratio", "Cache hit ratio", "缓存命中率"),
    (
        "dash.from_cache",
        "Bytes served from cache",
        "从缓存提供的字节",
    ),
    (
        "dash.fetched",
        "Bytes fetched from upstream",
        "从上游拉取的字节",
    ),
    ("dash.hour", "Last hour", "最近一小时"),
    ("dash.day", "Last day", "最近一天"),
    ("dash.week", "Last week", "最近一周"),
    ("dash.upstreams", "Upstreams", "上游"),
    ("dash.upstream", "Upstream", "上游"),
    ("dash.requests", "Requests", "请求数"),
    ("dash.errors", "Errors", "错误"),
    ("dash.latency", "Mean latency", "平均延迟"),
    ("dash.throttled", "429s", "429 次数"),
    ("dash.allowance", "Pull allowance left", "剩余拉取配额"),
    ("dash.breaker", "Circuit", "熔断状态"),
    ("dash.cache_size", "Cache size", "缓存大小"),
    (
        "dash.maxsize",
        "Limit (proxy.maxsize)",
        "上限（proxy.maxsize）",
    ),
    ("dash.evictions", "Evictions", "淘汰次数"),
    ("dash.top", "Most pulled images", "拉取最多的镜像"),
    ("dash.inflight", "Fetches in flight", "正在拉取"),
    (
        "dash.no_mirror",
        "This registry mirrors nothing (no proxy section).",
        "本仓库未配置镜像加速（无 proxy 配置）。",
    ),
    (
        "dash.offline",
        "Offline: no upstream is contacted.",
        "离线模式：不访问任何上游。",
    ),
    ("gc", "Garbage collection", "垃圾回收"),
    (
        "gc.dry",
        "Dry run (show what would be freed)",
        "试运行（显示可释放的空间）",
    ),
    ("gc.run", "Run GC now", "立即执行垃圾回收"),
    (
        "gc.untagged",
        "Also remove untagged manifests",
        "同时删除无标签的清单",
    ),
    ("gc.report", "GC report", "垃圾回收报告"),
    ("gc.would_free", "Would free", "可释放"),
    ("gc.freed", "Freed", "已释放"),
    ("evict", "Evict from cache", "从缓存中清除"),
    ("evicted", "Evicted.", "已清除。"),
    ("warm", "Warm from upstream", "从上游预热"),
    (
        "warm.image",
        "Image (e.g. library/alpine:3.20)",
        "镜像（例如 library/alpine:3.20）",
    ),
    ("warm.done", "Warmed.", "已预热。"),
    ("warm.failed", "Warming failed", "预热失败"),
    ("lang.switch", "Language", "语言"),
    ("error", "Error", "错误"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language() {
        assert_eq!(
            Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Lang::Zh
        );
        assert_eq!(
            Lang::from_accept_language("en-US,en;q=0.9,zh;q=0.5"),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language("fr, zh;q=0.4"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("fr"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
        assert_eq!(Lang::from_accept_language("zh;q=0"), Lang::En);
        assert_eq!(Lang::from_code("zh_TW"), Some(Lang::Zh));
    }

    #[test]
    fn catalogue_keys_are_unique_and_translated() {
        let mut seen = std::collections::HashSet::new();
        for (k, en, zh) in MESSAGES {
            assert!(seen.insert(k), "duplicate key {k}");
            assert!(!en.is_empty() && !zh.is_empty(), "{k}");
        }
        assert_eq!(Lang::Zh.t("login"), "登录");
    }
}
