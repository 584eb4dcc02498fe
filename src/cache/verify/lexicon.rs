//! The word lists the checks read: negations, antonym pairs, target words (languages,
//! platforms, ...), number words, function words and stopwords. Tables, not logic.

pub(super) const NEGATIONS: &[&str] = &[
    "not", "no", "never", "nobody", "nothing", "none", "neither", "nor", "without", "cannot",
    "nowhere", "hardly",
];

/// Pairs whose swap flips the meaning. Matched on whole lowercase words.
pub(super) const ANTONYMS: &[(&str, &str)] = &[
    ("increase", "decrease"),
    ("increasing", "decreasing"),
    ("raise", "lower"),
    ("buy", "sell"),
    ("buying", "selling"),
    ("before", "after"),
    ("best", "worst"),
    ("better", "worse"),
    ("cheap", "expensive"),
    ("cheapest", "expensive"),
    ("cheaper", "expensive"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("highest", "lowest"),
    ("high", "low"),
    ("longest", "shortest"),
    ("oldest", "youngest"),
    ("oldest", "newest"),
    ("first", "last"),
    ("up", "down"),
    ("open", "close"),
    ("start", "stop"),
    ("win", "lose"),
    ("won", "lost"),
    ("add", "remove"),
    ("enable", "disable"),
    ("true", "false"),
    ("hot", "cold"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("import", "export"),
    ("encrypt", "decrypt"),
    ("encode", "decode"),
    ("upload", "download"),
    ("push", "pull"),
    ("positive", "negative"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
    ("benefits", "drawbacks"),
    ("north", "south"),
    ("east", "west"),
    ("male", "female"),
    ("men", "women"),
    ("boy", "girl"),
    ("love", "hate"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("safe", "unsafe"),
    ("ascending", "descending"),
    ("left", "right"),
    ("inside", "outside"),
    ("above", "below"),
    ("more", "less"),
    ("most", "least"),
    ("early", "late"),
    ("earliest", "latest"),
    ("morning", "evening"),
    ("day", "night"),
    ("summer", "winter"),
    ("rich", "poor"),
    ("easy", "hard"),
    ("easiest", "hardest"),
    ("strong", "weak"),
    ("strongest", "weakest"),
    ("good", "bad"),
    ("success", "failure"),
    ("accept", "reject"),
    ("allow", "deny"),
    ("include", "exclude"),
    ("input", "output"),
    ("sender", "receiver"),
    ("client", "server"),
    ("frontend", "backend"),
    ("debit", "credit"),
    ("profit", "loss"),
    ("gain", "lose"),
];

/// Lowercase words that name a target (a language, a platform, a product) and so change
/// the answer when swapped, even uncapitalised.
pub(super) const TARGETS: &[&str] = &[
    "python",
    "rust",
    "java",
    "javascript",
    "typescript",
    "golang",
    "ruby",
    "php",
    "perl",
    "kotlin",
    "swift",
    "scala",
    "haskell",
    "c",
    "c++",
    "c#",
    "cpp",
    "csharp",
    "sql",
    "bash",
    "powershell",
    "r",
    "matlab",
    "julia",
    "elixir",
    "erlang",
    "lua",
    "dart",
    "html",
    "css",
    "react",
    "angular",
    "vue",
    "django",
    "flask",
    "rails",
    "spring",
    "node",
    "nodejs",
    "linux",
    "windows",
    "mac",
    "macos",
    "ios",
    "android",
    "ubuntu",
    "debian",
    "iphone",
    "postgres",
    "postgresql",
    "mysql",
    "sqlite",
    "mongodb",
    "redis",
    "kafka",
    "docker",
    "kubernetes",
    "aws",
    "azure",
    "gcp",
    "excel",
    "word",
    "chrome",
    "firefox",
    "safari",
];

pub(super) const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("thirteen", "13"),
    ("fourteen", "14"),
    ("fifteen", "15"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("forty", "40"),
    ("fifty", "50"),
    ("hundred", "100"),
    ("thousand", "1000"),
    ("million", "1000000"),
    ("billion", "1000000000"),
    ("second", "2nd"),
    ("third", "3rd"),
    ("fourth", "4th"),
    ("fifth", "5th"),
    ("tenth", "10th"),
];

/// Words that start a sentence capitalised or are capitalised by convention without naming
/// anything ("I", "What").
pub(super) fn is_function_word(w: &str) -> bool {
    const W: &[&str] = &[
        "i", "what", "how", "why", "when", "where", "which", "who", "whom", "whose", "is", "are",
        "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "the", "a",
        "an", "in", "on", "of", "to", "for", "and", "or", "if", "my", "your", "it", "its", "this",
        "that", "these", "those", "there", "as", "at", "by", "with", "from", "be", "have", "has",
        "had", "any", "some", "all", "me", "we", "you", "he", "she", "they", "them", "our",
        "their", "his", "her", "so", "but", "than", "then", "also", "about", "into", "after",
        "before", "am", "not", "no", "yes", "please", "tell", "give", "explain", "describe",
        "list", "find", "show", "write", "quora", "hi", "hello", "hey", "thanks", "ok", "okay",
        "vs", "versus",
    ];
    W.contains(&w)
}

/// Words that carry no topic: left out of the overlap features.
pub(super) fn is_stopword(w: &str) -> bool {
    is_function_word(w)
        || matches!(
            w,
            "there"
                | "here"
                | "been"
                | "being"
                | "get"
                | "got"
                | "way"
                | "ways"
                | "best"
                | "good"
                | "really"
                | "much"
                | "many"
                | "some"
                | "one"
                | "like"
                | "just"
                | "know"
                | "make"
                | "use"
                | "using"
                | "need"
                | "want"
                | "s"
                | "t"
        )
}

pub(super) const QUESTION_WORDS: &[&str] = &["what", "how", "why", "when", "where", "which", "who"];
