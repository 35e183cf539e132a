const usdc = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 6 });
const tokens = new Intl.NumberFormat("en-US", { maximumFractionDigits: 6 });

export const formatUsdc = (amount: number): string => usdc.format(amount);
export const formatTokens = (amount: number): string => tokens.format(amount);
export const signed = (amount: number): string => (amount < 0 ? `−${formatUsdc(-amount)}` : `+${formatUsdc(amount)}`);
